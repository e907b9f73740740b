"""`edgesense quantize`: the happy path and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_run import edgesense, only_line

from edgesense.app.cli import main
from edgesense.runtime.model import EdgeModel

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesense.app.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def _assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("edgesense: error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.slow
def test_quantize_with_report_end_to_end(tiny_run_dir, tmp_path):
    out = tmp_path / "models" / "tiny.tflite"
    result = _cli("quantize", str(tiny_run_dir), "--out", str(out), "--report", "--calibration-samples", "32")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    model = EdgeModel.load(out)
    assert model.metadata["quantization"]["calibration_samples"]["encode_audio"] == 32
    assert f"wrote {out}" in result.stdout
    for line in ("command accuracy drop", "scene accuracy drop", "model size"):
        assert any(text.startswith(("PASS", "FAIL")) and line in text for text in result.stdout.splitlines())
    report = json.loads((out.parent / "report.json").read_text())
    assert report["model"] == str(out) and (out.parent / "report.md").is_file()


def test_quantize_with_report_logs_the_model_where_it_is_put(tiny_run_dir, tmp_path, caplog):
    # the model is written under a hidden .NAME.PID.partial name until its report is: the log said "wrote" that
    # name, a file gone once the command ends
    import logging

    caplog.set_level(logging.INFO, logger="edgesense.quantize.convert")
    out = tmp_path / "m.tflite"
    assert main(["quantize", str(tiny_run_dir), "--out", str(out), "--report", "--mode", "float16"]) == 0
    wrote = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert wrote and all(".partial" not in line for line in wrote), wrote
    assert any(line.startswith(f"wrote {out} (") for line in wrote), wrote


def test_missing_model_subprocess(run_dir_copy, tmp_path):
    (run_dir_copy / "model.keras").unlink()
    result = _cli("quantize", str(run_dir_copy), "--out", str(tmp_path / "m.tflite"))
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "has no model.keras", str(run_dir_copy))


def test_a_damaged_model_is_said_to_be_one(run_dir_copy, tmp_path, capsys):
    (run_dir_copy / "model.keras").write_bytes(b"not a zip")  # Keras itself says "File not found"
    assert main(["quantize", str(run_dir_copy), "--out", str(tmp_path / "m.tflite")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "model.keras: is not a Keras model (not a zip archive)")


def test_qat_needs_a_run_with_its_training_config(tiny_run_dir, tmp_path, capsys):
    # The tiny fixture run is hand-built: it records no training config, so no training data.
    assert main(["quantize", str(tiny_run_dir), "--out", str(tmp_path / "m.tflite"), "--qat"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "run.json", "records no training config")
    assert not (tmp_path / "m.tflite").exists()
    # A run.json that is not a JSON object: a traceback (AttributeError).
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "run.json").write_text("[]")
    assert main(["quantize", str(listed), "--out", str(tmp_path / "m.tflite"), "--qat"]) == 2
    _assert_one_line_error(capsys.readouterr().err, f"{listed / 'run.json'}: expected a JSON object, got list")
    assert not (tmp_path / "m.tflite").exists()


def test_an_existing_out_is_refused_before_anything_runs_unless_force(tiny_run_dir, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"the user's model")
    for extra in ((), ("--qat",)):
        assert main(["quantize", str(tiny_run_dir), "--out", str(out), *extra]) == 2
        _assert_one_line_error(capsys.readouterr().err, f"--out {out}: exists; pass --force to replace it")
        assert out.read_bytes() == b"the user's model"
    assert not tiny_run_dir.with_name(tiny_run_dir.name + "-qat").exists()  # no fine-tuning started


def test_an_existing_report_is_refused_before_anything_runs_unless_force(tiny_run_dir, tmp_path, capsys):
    notes = tmp_path / "report.md"  # where --report puts the report beside the model
    notes.write_text("the user's notes")
    assert main(["quantize", str(tiny_run_dir), "--out", str(tmp_path / "m.tflite"), "--report"]) == 2
    _assert_one_line_error(capsys.readouterr().err, f"--report {notes}: exists; pass --force to replace it")
    assert notes.read_text() == "the user's notes" and not (tmp_path / "m.tflite").exists()


def test_a_report_that_cannot_be_made_is_refused_before_the_model_is_written(run_dir_copy, tmp_path, capsys):
    # It was said only after the conversion (or the fine-tuning), and then --out existed.
    out = tmp_path / "m.tflite"
    blocker = tmp_path / "notes"
    blocker.write_text("the user's notes")
    deeper = blocker / "deeper"
    for report, where in ((blocker, f"got {blocker}, which is a file"),
                          (deeper / "r.json", f"got {deeper}, inside {blocker}, which is a file")):
        assert main(["quantize", str(run_dir_copy), "--out", str(out), "--report", str(report)]) == 2
        _assert_one_line_error(capsys.readouterr().err, f"--report {report}: expected a folder for", where)
    validation = run_dir_copy / "validation.npz"
    validation.write_bytes(validation.read_bytes()[:100])  # damaged: truncated
    assert main(["quantize", str(run_dir_copy), "--out", str(out), "--report"]) == 2
    _assert_one_line_error(capsys.readouterr().err, f"{validation}: cannot read it as a NumPy .npz archive")
    assert not out.exists()
    validation.unlink()
    assert main(["quantize", str(run_dir_copy), "--out", str(out), "--report"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "--report: expected the run's validation.npz to compare on",
                           str(run_dir_copy / "validation.npz"))
    assert not out.exists() and blocker.read_text() == "the user's notes"


def test_qat_never_replaces_what_is_in_run_qat_unasked(run_dir_copy, tmp_path, capsys):
    qat = tmp_path / "run-qat"
    qat.mkdir()
    (qat / "keep.txt").write_text("the user's")
    assert main(["quantize", str(run_dir_copy), "--out", str(tmp_path / "m.tflite"), "--qat"]) == 2
    # --qat takes no folder and --force replaces only a run: the line said "choose another --qat, or pass --force
    # to replace it", neither of which the user can do
    _assert_one_line_error(capsys.readouterr().err, f"--qat {qat}: holds files (keep.txt), not a run, which is all "
                           "--force replaces; move that folder away (--qat writes the fine-tuned run to RUN_DIR-qat)")
    # --force replaces a run, never a folder that is not one.
    assert main(["quantize", str(run_dir_copy), "--out", str(tmp_path / "m.tflite"), "--qat", "--force"]) == 2
    _assert_one_line_error(capsys.readouterr().err, f"--qat {qat}: not empty and not a run folder (keep.txt;",
                           "even with --force")
    assert (qat / "keep.txt").read_text() == "the user's" and not (tmp_path / "m.tflite").exists()


def test_empty_representative_set(run_dir_copy, tmp_path, capsys):
    np.savez(run_dir_copy / "calibration.npz", audio_features=np.zeros((0, 49, 40), np.float32),
             image=np.zeros((0, 96, 96, 3), np.uint8))
    assert main(["quantize", str(run_dir_copy), "--out", str(tmp_path / "m.tflite")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "calibration.npz", "representative set")


def test_unwritable_output(tiny_run_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    # A file where --out's folder should be is named as --out's: the file itself said "File exists" (as if the
    # model were there, for --force) and, with --report, it was blamed on "--report " with no value.
    for out, where in ((blocker / "sub" / "m.tflite", f"got {blocker / 'sub'}, inside {blocker}, which is a file"),
                       (blocker / "m.tflite", f"got {blocker}, which is a file")):
        for report in ([], ["--report"]):
            assert main(["quantize", str(tiny_run_dir), "--out", str(out), *report]) == 2
            _assert_one_line_error(capsys.readouterr().err, f"--out {out}: expected a folder for the model", where)
    assert blocker.read_text() == ""


def test_a_report_in_the_models_place_is_refused_before_anything_runs(tiny_run_dir, tmp_path, capsys):
    # --report m.tflite (or m.tflite/) made a folder of the model's name, put the report in it, then failed to put
    # the converted model there with "[Errno 21] Is a directory", leaving a folder that refused the next --out.
    out = tmp_path / "m.tflite"
    for report, where in ((str(out), f"got {out / 'report.json'}, which is inside --out {out}"),
                          (f"{out}/", f"got {out / 'report.json'}, which is inside --out {out}")):
        assert main(["quantize", str(tiny_run_dir), "--out", str(out), "--report", report]) == 2
        _assert_one_line_error(capsys.readouterr().err, f"--report {report}: expected a place apart from the model",
                               where)
    named = tmp_path / "report.json"  # the model named as the report beside it would be
    assert main(["quantize", str(tiny_run_dir), "--out", str(named), "--report"]) == 2
    _assert_one_line_error(capsys.readouterr().err, f"--report: expected a place apart from the model, got {named}, "
                           f"which is --out {named}")
    assert list(tmp_path.iterdir()) == []


def test_bad_calibration_count(tiny_run_dir, tmp_path, capsys):
    assert main(["quantize", str(tiny_run_dir), "--out", str(tmp_path / "m.tflite"),
                 "--calibration-samples", "0"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "--calibration-samples: expected")


def test_bad_flags_are_named_as_typed_before_any_conversion(tmp_path):
    """Flags in the user's words and units (--max-kb in KB, not max_model_bytes in bytes), before
    TensorFlow starts: no run folder is needed to hear about them."""
    common = ("quantize", tmp_path / "no-run", "--out", tmp_path / "m.tflite")
    assert only_line(edgesense(*common, "--report", "--max-kb", "-1")) == (
        "edgesense: error: --max-kb: expected a positive number of KB, got -1")
    assert only_line(edgesense(*common, "--calibration-samples", "0")).startswith(
        "edgesense: error: --calibration-samples: expected an integer")
    assert only_line(edgesense(*common, "--qat", "--qat-epochs", "0")).startswith(
        "edgesense: error: --qat-epochs: expected an integer >= 1, got 0")


@pytest.mark.parametrize("flags, expected", [
    (("--max-kb", "150"), "--max-kb: acts only with --report, which is not given"),
    (("--fail-on-budget",), "--fail-on-budget: acts only with --report, which is not given"),
    (("--qat-epochs", "2"), "--qat-epochs: acts only with --qat, which is not given"),
    (("--mode", "float16", "--calibration-samples", "8"), "--calibration-samples: acts only with --mode int8, got "
                                                          "--mode float16"),
    (("--mode", "dynamic", "--calibration-samples", "8"), "--calibration-samples: acts only with --mode int8, got "
                                                          "--mode dynamic"),
])
def test_a_flag_that_acts_only_with_another_is_refused_without_it(tiny_run_dir, tmp_path, capsys, flags, expected):
    # Silently ignored, --fail-on-budget would pass an oversized model with exit code 0.
    out = tmp_path / "m.tflite"
    assert main(["quantize", str(tiny_run_dir), "--out", str(out), *flags]) == 2
    _assert_one_line_error(capsys.readouterr().err, expected)
    assert not out.exists()


@pytest.mark.slow
def test_unsupported_ops_message(unsupported_op_run, tmp_path, capsys):
    assert main(["quantize", str(unsupported_op_run), "--out", str(tmp_path / "m.tflite")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "image_encoder", "MatrixDeterminant")


@pytest.mark.slow
def test_a_full_temporary_folder_is_said_not_blamed_on_the_model(tiny_run_dir, tmp_path):
    """The converter first saves each part as a SavedModel in the temporary folder. On a full disk (here a limit on
    the size of a file, RLIMIT_FSIZE: writes past it fail with EFBIG) TensorFlow said nothing and went on by another
    way, and quantize blamed the model: "cannot be converted to int8 TFLite with builtin ops only: SignatureDef
    signature_key is None and model has 0 Signatures"."""
    resource = pytest.importorskip("resource")
    temporary = tmp_path / "tmp"
    temporary.mkdir()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    out = tmp_path / "models" / "m.tflite"
    proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "quantize", str(tiny_run_dir), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, preexec_fn=limit, timeout=300, check=False,
                          env={**os.environ, "TMPDIR": str(temporary)})
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_error(proc.stderr, "part 'audio_encoder' cannot be converted to int8 TFLite: the converter's "
                           f"temporary files do not fit in {temporary}: File too large", "set TMPDIR")
    assert not out.exists()


@pytest.mark.parametrize("value", [np.inf, np.nan], ids=["inf", "nan"])
def test_a_calibration_set_with_non_finite_features_is_refused_in_one_line(run_dir_copy, tmp_path, value):
    # An inf crashed the converter (SIGSEGV, "scale out of expressed type range"); a NaN was calibrated on.
    path = run_dir_copy / "calibration.npz"
    data = dict(np.load(path))
    data["audio_features"][2, 3, 4] = value
    np.savez(path, **data)
    result = _cli("quantize", str(run_dir_copy), "--out", str(tmp_path / "m.tflite"))
    assert result.returncode == 2, result.stderr[-2000:]
    _assert_one_line_error(result.stderr, f"{path}: audio_features: expected finite values, got {value} (sample 2)")
    assert not list(tmp_path.glob("*.tflite*")) and not list(tmp_path.glob(".m.tflite*"))


@pytest.mark.parametrize("change, message", [
    (lambda v: v.update(scene_label=v["scene_label"] + 5), "scene_label: expected values in [0, 3), got 5"),
    (lambda v: v.update(command_label=v["command_label"][:3]), "command_label: expected 48 labels (one per "
                                                               "audio_features), got 3"),
    (lambda v: v.update(audio_features=v["audio_features"][:, :10]), "audio_features: expected float32 (N, 49, 40)"),
    (lambda v: v.pop("image"), "missing array 'image'"),
    (lambda v: v.update({key: array[:0] for key, array in v.items()}), "--report: expected clips or photos to "
                                                                       "compare on in"),
], ids=["label-range", "label-count", "shape", "missing", "empty"])
def test_a_validation_set_that_does_not_fit_the_run_is_refused_before_the_model_is_written(
        run_dir_copy, tmp_path, capsys, change, message):
    # It was said only after the conversion, with the model written: the same command again met "--out exists".
    path = run_dir_copy / "validation.npz"
    data = dict(np.load(path))
    change(data)
    np.savez(path, **data)
    out = tmp_path / "m.tflite"
    assert main(["quantize", str(run_dir_copy), "--out", str(out), "--report"]) == 2
    _assert_one_line_error(capsys.readouterr().err, message)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_report_never_leaves_a_new_model_beside_the_earlier_ones_report(tiny_run_dir, tmp_path, sig):
    # --force --report replaced the model first, then made its report: Ctrl-C meanwhile left the new float16 model
    # beside report.json and report.md of the int8 one before, which read as complete
    import os
    import signal
    import time

    out = tmp_path / "m.tflite"
    first = _cli("quantize", str(tiny_run_dir), "--out", str(out), "--report")
    assert first.returncode == 0, first.stderr
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = [sys.executable, "-m", "edgesense.app.cli", "quantize", str(tiny_run_dir), "--out", str(out), "--report",
            "--mode", "float16", "--force"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:  # the new model is written: its report is next
        if out.read_bytes() != earlier[out.name] or any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 130), err
    assert sorted(os.listdir(tmp_path)) == ["m.tflite", "report.json", "report.md"]  # no hidden file left
    report = json.loads((tmp_path / "report.json").read_text())
    model = EdgeModel.load(out)
    assert (report["mode"], report["size"]["total_bytes"]) == (model.metadata["quantization"]["mode"],
                                                               out.stat().st_size)
