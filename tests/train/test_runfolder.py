"""The run-folder checks of ``edgesense train`` (no TensorFlow): ``--init-from`` is checked in full
before anything in ``--out`` is touched."""

from __future__ import annotations

import zipfile
from pathlib import Path

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


#: Starts the staging of ``--out ARGV[1]``, writes a checkpoint into it and says where; then ``kill``: dies at once
#: (SIGKILL: the OOM killer), ``live``: lives until its standard input closes.
_STAGING_RUN = """
import os, signal, sys
from pathlib import Path
from edgesense.train.runfolder import start_staging

staging = start_staging(Path(sys.argv[1]))
(staging / "model.keras").write_bytes(b"checkpoint")
print(staging, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def _staging_run(out, how):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _STAGING_RUN, str(out), how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    staging = Path(proc.stdout.readline().strip())
    if how == "kill":
        proc.wait(timeout=60)
    return proc, staging


@pytest.fixture
def local_folder(tmp_path):
    """``tmp_path``, where a sweep of what killed runs left is allowed (a local file system)."""
    from edgesense.train.runfolder import may_sweep

    if not may_sweep(tmp_path):
        pytest.skip(f"{tmp_path} is not on a local file system: leftovers are never swept there")
    return tmp_path


def test_staging_folders_of_killed_runs_are_removed_by_the_next_run_and_no_other_folder(local_folder):
    tmp_path = local_folder
    # Each run killed by the OOM killer left its .NAME.training-PID (a checkpoint: up to ~29 MB) for good: a later
    # run removed only one left under its own process id.
    out = tmp_path / "run"
    killed = [_staging_run(out, "kill")[1] for _ in range(2)]
    assert not killed[0].exists() and (killed[1] / "model.keras").is_file()  # the second run removed the first's
    living, living_staging = _staging_run(out, "live")
    try:
        other = _staging_run(tmp_path / "other", "kill")[1]  # another --out's: that run's to remove
        replaced = tmp_path / ".run.replaced-12345"  # the only copy of an earlier run, when a kill came mid-commit
        replaced.mkdir()
        (replaced / "model.keras").write_bytes(b"47 minutes of training")
        staging = start_staging(out)
        assert not any(folder.exists() for folder in killed)
        assert (living_staging / "model.keras").is_file() and (other / "model.keras").is_file()
        assert (replaced / "model.keras").read_bytes() == b"47 minutes of training"
        discard_staging(staging)
    finally:
        living.communicate(timeout=60)
    discard_staging(start_staging(out))  # its run ended (here without cleaning up): its folder goes now
    assert not living_staging.exists()


def test_an_earlier_run_a_kill_mid_commit_left_hidden_is_said_at_the_next_run_and_kept(local_folder, caplog):
    """A kill between commit_run's two renames leaves the earlier run in .NAME.replaced-PID, hidden (ls shows no
    dot-folder) and its only copy: the next run into the same --out said nothing of it."""
    out = local_folder / "run"
    _run(out, model=b"the new run")
    hidden = local_folder / ".run.replaced-999999"  # no such process: its run was killed
    _run(hidden, model=b"47 minutes of training")
    (hidden / "run.json").write_text("{}")
    with caplog.at_level("WARNING", logger="edgesense.train.runfolder"):
        discard_staging(start_staging(out, flag="--out"))
    assert [r.getMessage() for r in caplog.records] == [
        f"--out {out}: the hidden folder {hidden} holds the earlier run in --out (model.keras, run.json), set aside "
        "by a run killed while it replaced it (process 999999); kept: move it back or delete it"]
    assert (hidden / MODEL_FILE).read_bytes() == b"47 minutes of training"


def test_a_living_run_whose_process_has_this_id_keeps_its_staging_folder(tmp_path):
    # Two containers whose processes have the same id, training into one --out: the second removed the first's
    # staging folder as one "left by a killed process of the same id", and the first run was lost at its end.
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    theirs = tmp_path / f".run.training-{os.getpid()}"
    theirs.mkdir()
    (theirs / "model.keras").write_bytes(b"their checkpoint")
    holder = subprocess.Popen(  # the other container's run: holds its folder's lock as start_staging does
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()", str(theirs)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        staging = start_staging(out)
        assert staging == tmp_path / f"{theirs.name}-2"
        assert (theirs / "model.keras").read_bytes() == b"their checkpoint"
        (staging / MODEL_FILE).write_bytes(b"ours")
        commit_run(staging, out, replace=False)
        assert (out / MODEL_FILE).read_bytes() == b"ours" and (theirs / "model.keras").is_file()
    finally:
        holder.communicate(timeout=60)


def test_on_a_shared_file_system_nothing_that_looks_left_by_a_killed_run_is_removed(tmp_path, monkeypatch):
    # On NFS, sshfs or a share a lock may be this host's alone and a process id another host's: a living run
    # there looked killed, and its staging folder (or a cache file it was writing) was removed.
    import edgesense.train.runfolder as runfolder
    from edgesense.train.cache import ArrayCache

    out = tmp_path / "run"
    elsewhere = _staging_run(out, "kill")[1]  # a run of another host, as this one sees it: no lock, no process
    writing = tmp_path / "bank" / "k1.npz.4194000-ab12.partial.npz"
    writing.parent.mkdir()
    writing.write_bytes(b"PK half an entry")
    monkeypatch.setattr(runfolder, "file_system_type", lambda path, mounts=None: "nfs4")
    discard_staging(start_staging(out))
    ArrayCache(tmp_path).get_or_compute("bank", "k1", lambda: {"x": [1.0]})
    assert (elsewhere / "model.keras").is_file() and writing.read_bytes() == b"PK half an entry"


def test_the_file_system_of_a_path_is_its_longest_mount_point_s():
    from edgesense.train.runfolder import file_system_type

    mounts = ("/dev/sda1 / ext4 rw 0 0\nserver:/runs /mnt/my\\040runs nfs4 rw 0 0\n"
              "tmpfs /mnt/my\\040runs/scratch tmpfs rw 0 0\n")
    assert file_system_type(Path("/mnt/my runs/v1"), mounts) == "nfs4"
    assert file_system_type(Path("/mnt/my runs/scratch/x"), mounts) == "tmpfs"
    assert file_system_type(Path("/mnt/my runsx"), mounts) == "ext4"


def _rename_as_windows(monkeypatch):
    """Windows' rename: it never replaces a folder that exists, not even an empty one (POSIX's does)."""
    real = Path.rename

    def rename(self, target):
        if Path(target).exists():
            raise FileExistsError(183, "Cannot create a file when that file already exists", str(target))
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)


def test_a_run_goes_into_an_empty_out_made_beforehand_where_a_rename_replaces_no_folder(tmp_path, monkeypatch):
    """On Windows a run into an ``--out`` made beforehand (empty: File Explorer's *New folder*) could not be
    renamed there: it was kept in ``run-2`` and said as if another run had written into ``--out``."""
    _rename_as_windows(monkeypatch)
    out = tmp_path / "run"
    out.mkdir()
    commit_run(_staged(out), out, replace=False)
    assert (out / MODEL_FILE).read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    commit_run(_staged(out), out, replace=True)  # --force over the run: as on Linux
    assert (out / MODEL_FILE).read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # a folder that is not empty is still never replaced unasked, nor anything in it removed
    other = tmp_path / "other"
    staging = _staged(other)
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="the run was kept in"):
        commit_run(staging, other, replace=True)
    assert (other / "notes.txt").read_text() == "mine" and (tmp_path / "other-2" / MODEL_FILE).is_file()


def test_a_run_is_staged_and_committed_where_there_is_no_flock(tmp_path):
    """``import fcntl`` at the top of the module: on Windows (no ``fcntl``) ``edgesense train``, ``average`` and
    ``quantize --qat`` failed with ModuleNotFoundError before anything ran."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['fcntl'] = None\n"
            "from pathlib import Path\n"
            "from edgesense.train.runfolder import staged_run\n"
            f"with staged_run(Path({str(tmp_path / 'run')!r}), replace=False) as staging:\n"
            "    (staging / 'run.json').write_text('{}')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and (tmp_path / "run" / "run.json").is_file()
