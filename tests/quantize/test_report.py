"""quantize.report: float Keras vs int8 TFLite parity on validation.npz."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgesense.quantize.report import (
    ReportOptions,
    budget_lines,
    build_report,
    render_markdown,
    report_paths,
    write_report,
)
from edgesense.runtime.model import EdgeModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tiny_run_dir, tiny_model_path):
    return build_report(tiny_run_dir, tiny_model_path)


def test_report_numbers_are_recomputable(report, tiny_run_dir, tiny_model_path):
    """Recompute the command head's int8 accuracy and the scene head's float accuracy independently."""
    from edgesense.quantize.convert import float_embeddings, load_run

    with np.load(tiny_run_dir / "validation.npz") as npz:
        v = {k: npz[k] for k in npz.files}
    model = EdgeModel.load(tiny_model_path)
    int8_cmd = np.array([model.fuse(model.encode_audio(x), None)[0].argmax() for x in v["audio_features"]])
    assert report["heads"]["command"]["tflite_accuracy"] == pytest.approx((int8_cmd == v["command_label"]).mean())
    assert report["heads"]["command"]["samples"] == len(v["command_label"])

    run = load_run(tiny_run_dir)
    emb = float_embeddings(run.image_encoder, v["image"].astype(np.float32))
    n = len(emb)
    out = run.fusion_head([np.zeros((n, run.audio_embedding_dim), np.float32), emb,
                           np.zeros((n, 1), np.float32), np.ones((n, 1), np.float32)])
    float_scene = np.asarray(out["scene"]).argmax(1)
    assert report["heads"]["scene"]["float_accuracy"] == pytest.approx((float_scene == v["scene_label"]).mean())


def test_report_parity_is_close(report):
    for head in ("command", "scene"):
        stats = report["heads"][head]
        assert 0.0 <= stats["tflite_accuracy"] <= 1.0
        assert stats["float_accuracy"] > 0.25  # the fixture model learned something
        assert stats["top1_agreement"] >= 0.8
        assert 0.0 < stats["mean_abs_diff"] < 0.03  # int8 is not bit-identical to float, but close
        assert stats["accuracy_drop_points"] == pytest.approx(
            100 * (stats["float_accuracy"] - stats["tflite_accuracy"]))
    for name in ("audio", "image"):
        assert 0.0 < report["embeddings"][name]["relative_mean_abs_diff"] < 0.1


def test_report_sizes_and_costs(report, tiny_run_dir, tiny_model_path):
    run = json.loads((tiny_run_dir / "run.json").read_text())
    assert report["size"]["total_bytes"] == tiny_model_path.stat().st_size
    assert set(report["size"]["part_weight_bytes"]) == {"encode_audio", "encode_image", "fuse"}
    assert report["params"] == run["params"] and report["macs"] == run["macs"]
    assert report["mode"] == "int8"
    assert "audio present and image absent" in report["evaluation"]["command"]
    assert "image present and audio absent" in report["evaluation"]["scene"]


def test_budget_checks(report, tiny_run_dir, tiny_model_path):
    lines = budget_lines(report)
    assert len(lines) == 3 and all(line.split()[0] in ("PASS", "FAIL") for line in lines)
    assert lines[2].startswith("PASS model size")  # the tiny model is far below 200 KB
    strict = build_report(tiny_run_dir, tiny_model_path, ReportOptions(max_model_bytes=1000))
    assert budget_lines(strict)[2].startswith("FAIL model size") and strict["budget"]["pass"] is False
    lenient = build_report(tiny_run_dir, tiny_model_path,
                           ReportOptions(max_accuracy_drop_points=100.0, max_model_bytes=10_000_000))
    assert lenient["budget"]["pass"] is True
    assert [line.split()[0] for line in budget_lines(lenient)] == ["PASS", "PASS", "PASS"]


def test_write_report(report, tmp_path):
    json_path, md_path = report_paths(tmp_path / "models" / "m.tflite")
    assert (json_path.name, md_path.name) == ("report.json", "report.md")
    write_report(report, json_path, md_path)
    assert json.loads(json_path.read_text())["heads"] == json.loads(json.dumps(report["heads"]))
    md = md_path.read_text()
    assert md == render_markdown(report)
    assert "| command |" in md and "| scene |" in md and "## Evaluation protocol" in md
    assert any(line.startswith(("- PASS", "- FAIL")) for line in md.splitlines())


def test_report_paths():
    assert report_paths("m/x.tflite", "out/r.json") == (report_paths("m/x.tflite", "out/r.md"))
    json_path, md_path = report_paths("m/x.tflite", "out/r.json")
    assert (str(json_path), str(md_path)) == ("out/r.json", "out/r.md")
    json_path, md_path = report_paths("m/x.tflite", "some/folder")
    assert (str(json_path), str(md_path)) == ("some/folder/report.json", "some/folder/report.md")


@pytest.mark.parametrize("kwargs, field", [
    ({"max_accuracy_drop_points": -1}, "max_accuracy_drop_points"),
    ({"max_model_bytes": 0}, "max_model_bytes"),
    ({"interpreter": "cpu"}, "interpreter"),
])
def test_options_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        ReportOptions(**kwargs)


def test_report_rejects_a_model_with_another_frontend(tiny_run_dir, tiny_model_path, tmp_path):
    info = json.loads((tiny_run_dir / "run.json").read_text())
    import shutil

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    info["labels"]["scene"] = ["x", "y", "z"]
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="scene labels differ"):
        build_report(run, tiny_model_path)


@pytest.mark.parametrize("samples, lost", [(200, 1), (400, 2), (600, 3), (1000, 5)])
def test_a_drop_of_exactly_the_budget_passes(samples, lost):
    # The drop was the difference of two accuracies: 1 clip of 200 lost read 0.5000000000000004 points, a FAIL.
    from edgesense.quantize.report import _head_stats

    labels = np.zeros(samples, np.int64)
    float_probs = np.tile([0.9, 0.1], (samples, 1))
    float_probs[:samples // 10] = [0.1, 0.9]  # 90 % right
    tflite_probs = float_probs.copy()
    tflite_probs[samples // 10:samples // 10 + lost] = [0.1, 0.9]
    stats = _head_stats(float_probs, tflite_probs, labels)
    assert stats["accuracy_drop_points"] == 0.5 <= ReportOptions().max_accuracy_drop_points
    assert stats["float_accuracy"] == 0.9 and stats["top1_agreement"] == 1 - lost / samples
