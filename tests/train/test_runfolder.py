"""The run-folder checks of ``edgesense train`` (no TensorFlow): ``--init-from`` is checked in full
before anything in ``--out`` is touched."""

from __future__ import annotations

import zipfile

import pytest

from edgesense.train.runfolder import KERAS_WEIGHTS_ENTRY, MODEL_FILE, check_init_from


def _run(path, model: bytes | None = None, entries: tuple[str, ...] = ()):
    path.mkdir()
    if model is not None:
        (path / MODEL_FILE).write_bytes(model)
    else:
        with zipfile.ZipFile(path / MODEL_FILE, "w") as archive:
            for name in entries:
                archive.writestr(name, b"")
    return path


def test_init_from_a_run_whose_model_is_not_a_keras_archive_is_one_clear_error(tmp_path):
    run = _run(tmp_path / "run", model=b"not a model")
    with pytest.raises(ValueError) as caught:
        check_init_from(run, tmp_path / "out")
    assert str(caught.value) == (f"--init-from {run}: expected a run folder with a saved {MODEL_FILE}, but its "
                                 f"{MODEL_FILE} is not a Keras model (not a zip archive)")


def test_init_from_a_zip_without_weights_is_refused_and_the_flag_is_named_as_given(tmp_path):
    run = _run(tmp_path / "run", entries=("config.json",))
    with pytest.raises(ValueError, match=rf"^init_from {run}: .*zip archive without {KERAS_WEIGHTS_ENTRY}"):
        check_init_from(run, flag="init_from")


def test_init_from_a_saved_model_passes(tmp_path):
    run = _run(tmp_path / "run", entries=("config.json", "metadata.json", KERAS_WEIGHTS_ENTRY))
    assert check_init_from(run, tmp_path / "out") == run
