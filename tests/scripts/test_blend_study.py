"""scripts/blend_study.py: the weighted mean is the device's blend, the weighted geometric mean is a
distribution that damps a peak the other detector all but rules out more than the mean does, the model's hops are
matched to the heads' later-starting hops, and bad input is one line with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_script

from edgesense.bench.streams import StreamPosteriors

LABELS = ("_silence_", "_unknown_", "yes", "no")


@pytest.fixture(scope="module")
def study():
    return load_script("blend_study")


def _posteriors(times_ms, rows, duration_ms=1000.0) -> StreamPosteriors:
    return StreamPosteriors(times_ms=np.asarray(times_ms, np.float64), posteriors=np.asarray(rows, np.float32),
                            labels=LABELS, hop_ms=100.0, duration_ms=duration_ms)


def test_the_mean_is_the_devices_blend_and_the_product_damps_a_lone_peak(study):
    student = np.array([[0.05, 0.899, 0.001, 0.05], [0.1, 0.1, 0.7, 0.1]])
    heads = np.array([[0.02, 0.08, 0.88, 0.02], [0.05, 0.05, 0.85, 0.05]])
    mean = study.blend(student, heads, "arithmetic", 0.3)
    np.testing.assert_allclose(mean, 0.3 * student + 0.7 * heads)
    product = study.blend(student, heads, "geometric", 0.3)
    np.testing.assert_allclose(product.sum(axis=1), 1.0)
    assert product[0, 2] < mean[0, 2] - 0.2  # 'yes' that the model all but rules out: damped by the product
    assert product[1, 2] > 0.75  # both say 'yes': the product keeps it
    np.testing.assert_allclose(study.blend(heads, heads, "geometric", 0.3), heads, atol=1e-6)
    zero = np.array([[0.0, 1.0, 0.0, 0.0]])  # an int8 model's exact zero does not give NaN
    assert np.isfinite(study.blend(zero, heads[:1], "geometric", 0.5)).all()


def test_the_models_hops_are_matched_to_the_heads_hops(study):
    rows = np.eye(4)[[0, 1, 2, 3, 0, 1]]
    student = _posteriors(np.arange(1, 7) * 100.0, rows)
    heads = _posteriors([300.0, 400.0, 500.0, 600.0], rows[2:] * 0.5 + 0.125)
    s, h = study.aligned(student, heads)
    np.testing.assert_array_equal(s, rows[2:])
    np.testing.assert_allclose(h, rows[2:] * 0.5 + 0.125)
    with pytest.raises(ValueError, match="one hop"):
        study.aligned(student, _posteriors([350.0], rows[:1]))
    with pytest.raises(ValueError, match="same streams"):
        study.aligned(student, _posteriors([300.0], rows[:1], duration_ms=2000.0))


def test_a_folder_that_is_not_a_bench_run_is_one_line_and_exit_code_2(study, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text(json.dumps({"streaming": {}}))
    assert study.main([str(tmp_path / "run"), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blend_study: ") and "report.json" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        study.main([str(tmp_path), str(tmp_path), "--blend", "harmonic:0.3"])
    assert exc.value.code == 2 and "--blend" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        study.main([str(tmp_path), str(tmp_path), "--max-latency-p95-ms", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "--max-latency-p95-ms: expected a latency budget in ms > 0" in err[-1]
