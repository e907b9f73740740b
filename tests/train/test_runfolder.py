"""The run-folder checks of ``edgesense train`` (no TensorFlow): ``--init-from`` is checked in full
before anything in ``--out`` is touched."""

from __future__ import annotations

import zipfile

import pytest

from edgesense.train.runfolder import (
    KERAS_WEIGHTS_ENTRY, MODEL_FILE, check_init_from, commit_run, discard_staging, staged_run, start_staging,
)


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


def _staged(out):
    staging = start_staging(out)
    (staging / MODEL_FILE).write_bytes(b"new")
    (staging / "run.json").write_text("{}")
    return staging


def test_a_run_goes_to_out_only_whole_and_over_an_earlier_run_only_with_replace(tmp_path):
    out = tmp_path / "run"
    staging = _staged(out)
    assert not out.exists() and staging.parent == tmp_path and staging.name.startswith(".")
    commit_run(staging, out, replace=False)
    assert (out / MODEL_FILE).read_bytes() == b"new" and not staging.exists()
    commit_run(_staged(out), out, replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_written_meanwhile_into_out_is_not_replaced_unasked(tmp_path):
    # Two trainings into one --out: the later one to finish keeps its run beside the first's.
    out = tmp_path / "run"
    staging = _staged(out)
    out.mkdir()
    (out / MODEL_FILE).write_bytes(b"the other run")
    with pytest.raises(ValueError) as caught:
        commit_run(staging, out, replace=False)
    assert str(caught.value) == (f"--out {out}: files were written there while this run trained, which it does not "
                                 f"replace unasked; the run was kept in {tmp_path / 'run-2'}")
    assert (out / MODEL_FILE).read_bytes() == b"the other run"
    assert (tmp_path / "run-2" / MODEL_FILE).read_bytes() == b"new" and not staging.exists()


def test_an_out_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^--out .*file/run: cannot write a run there \(Not a directory\)$"):
        start_staging(tmp_path / "file" / "run")


def test_a_discarded_run_leaves_none_of_the_folders_made_for_it_and_every_other(tmp_path):
    (tmp_path / "runs").mkdir()  # there before: kept, even empty
    staging = start_staging(tmp_path / "runs" / "new" / "deeper" / "v1")
    assert staging.parent == tmp_path / "runs" / "new" / "deeper"
    discard_staging(staging)  # a failed run left runs/new/deeper behind, empty
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and not any((tmp_path / "runs").iterdir())
    staging = start_staging(tmp_path / "runs" / "new" / "v1")
    (tmp_path / "runs" / "new" / "v2").mkdir()  # another run meanwhile: its folder stays
    discard_staging(staging)
    assert sorted(p.name for p in (tmp_path / "runs" / "new").iterdir()) == ["v2"]
    commit_run(_staged(tmp_path / "runs" / "a" / "v1"), tmp_path / "runs" / "a" / "v1", replace=False)
    assert (tmp_path / "runs" / "a" / "v1" / MODEL_FILE).read_bytes() == b"new"


def test_staged_run_moves_a_whole_run_to_out_and_leaves_nothing_of_one_interrupted(tmp_path):
    out = tmp_path / "run"
    with staged_run(out, replace=False) as staging:
        (staging / MODEL_FILE).write_bytes(b"first")
        assert not out.exists()
    assert (out / MODEL_FILE).read_bytes() == b"first"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while the new run is written: the earlier one stays whole
        with staged_run(out, replace=True) as staging:
            (staging / MODEL_FILE).write_bytes(b"second")
            raise KeyboardInterrupt
    assert (out / MODEL_FILE).read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
