"""scripts/soak.py (RELIABILITY.md's 24-hour soak): bad input is one line and exit code 2, as for
``edgesense``, before any stream runs."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("flags, expected", [
    # the first sample after the warm-up would be the final one: growth 0 %, a PASS that measured nothing
    (["--hours", "0.05", "--sample-minutes", "10", "--warmup-minutes", "1"],
     "soak.py: error: --sample-minutes: expected a sample after --warmup-minutes 1 and before the end (3 minutes)"),
    # found only when the figures are written, after the whole (24 h by default) run
    (["--hours", "0.01", "--json", "no-such-folder/soak.json"],
     "soak.py: error: --json no-such-folder/soak.json: expected a file in an existing folder"),
    (["--hours", "0.01", "--work-dir", "README.md"], "soak.py: error: --work-dir README.md: expected a folder"),
    (["--hours", "inf"], "soak.py: error: --hours: expected a positive number, got inf"),
    (["--hours", "0.01", "--max-growth-percent", "nan"],
     "soak.py: error: --max-growth-percent: expected a positive number, got nan"),
    (["--hours", "0.01", "--warmup-minutes", "-1"], "soak.py: error: --warmup-minutes: expected a number >= 0"),
])
def test_flags_that_would_spoil_the_run_are_refused_before_it(capsys, monkeypatch, flags, expected):
    soak = load_script("soak")
    monkeypatch.chdir(soak.REPO)
    assert soak.main(["--warmup-minutes", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected), err  # one line: no usage before it


def test_a_short_soak_reports_open_files_and_threads(capsys, tmp_path):
    soak = load_script("soak")
    out = tmp_path / "soak.json"
    assert soak.main(["--hours", "0.005", "--sample-minutes", "0.1", "--warmup-minutes", "0.1",
                      "--work-dir", str(tmp_path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    # sampled while the pipeline still holds its files (not after close(), where fewer are open whatever leaked)
    assert result["fds_final"] == result["fds_baseline"] > 3 and result["threads_final"] == result["threads_baseline"]
    assert all(sample["fds"] == result["fds_baseline"] for sample in result["rss_samples"][1:])
    assert "open files" in capsys.readouterr().err.splitlines()[-1]
