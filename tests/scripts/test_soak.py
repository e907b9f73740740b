"""scripts/soak.py (RELIABILITY.md's 24-hour soak): bad input is one line and exit code 2, as for
``edgesense``, before any stream runs."""

from __future__ import annotations

import pytest
from conftest import load_script


@pytest.mark.parametrize("flags, expected", [
    (["--config", "README.md"], "soak.py: error: README.md:7: not valid YAML"),
    (["--model", "nope.tflite"], "soak.py: error: model file nope.tflite does not exist"),
])
def test_bad_input_gets_one_line_and_exit_code_2(capsys, monkeypatch, flags, expected):
    monkeypatch.chdir(load_script("soak").REPO)
    assert load_script("soak").main(["--hours", "0.01", "--warmup-minutes", "0", *flags]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(expected)
