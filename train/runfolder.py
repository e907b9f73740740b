"""The run folder ``edgesense train``, ``edgesense average`` and ``quantize --qat`` write: never over an earlier
run unasked, never left half-written.

A run is written inside :func:`staged_run`: into a hidden staging folder beside ``--out`` (:func:`start_staging`),
moved there only once it is complete (:func:`commit_run`): a run that fails or is interrupted leaves
nothing in ``--out`` (an earlier run that ``--force`` would replace is kept), and two runs into one
``--out`` never mix their files.

No TensorFlow here: ``edgesense train`` checks ``--out`` and ``--init-from`` with these before
TensorFlow starts (and before the data loads).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Iterator, Literal

try:
    import fcntl
except ImportError:  # Windows: no flock (nor /proc), so nothing a killed run left is ever swept there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = ["KERAS_WEIGHTS_ENTRY", "MODEL_FILE", "RUN_MARKERS", "check_init_from", "check_out_dir",
           "check_out_outside_data", "commit_run", "dead_leftovers", "discard_staging", "file_system_type",
           "may_sweep", "process_alive", "staged_run", "start_staging"]

MODEL_FILE = "model.keras"
#: Files only a run folder holds (docs/CONTRACTS.md); one of them marks a folder --force may replace.
RUN_MARKERS = ("run.json", MODEL_FILE, "history.csv", "metrics.json")
#: The entry of a ``.keras`` archive that holds the weights (what ``--init-from`` loads).
KERAS_WEIGHTS_ENTRY = "model.weights.h5"
_SHOWN_FILES = 3


def check_out_dir(out_dir: Path, force: bool, flag: str = "--out", force_flag: str = "--force",
                  choose: str | None = None) -> None:
    """ValueError unless ``out_dir`` is new, empty, or (with ``force``) an earlier run folder; the
    message names ``flag`` and ``force_flag`` (the CLI's, or the API's parameters) and says how to
    pick another folder: ``choose`` (default ``choose another FLAG``; ``--qat`` names no folder).
    ``force_flag`` is offered only for a run folder: it replaces nothing else."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"{flag} {out_dir}: exists and is not a folder")
    files = sorted(p.name for p in out_dir.iterdir())
    if not files:
        return
    shown = ", ".join(files[:_SHOWN_FILES]) + (", ..." if len(files) > _SHOWN_FILES else "")
    is_run = any((out_dir / name).exists() for name in RUN_MARKERS)
    choose = choose or f"choose another {flag}"
    if not force and is_run:
        raise ValueError(f"{flag} {out_dir}: already holds a run ({shown}); {choose}, or pass {force_flag} to "
                         "replace it")
    if not force:  # the hint was "or pass --force to replace it", which then refused: not a run folder
        raise ValueError(f"{flag} {out_dir}: holds files ({shown}), not a run, which is all {force_flag} replaces; "
                         f"{choose}")
    if not is_run:
        raise ValueError(f"{flag} {out_dir}: not empty and not a run folder ({shown}; none of "
                         f"{', '.join(RUN_MARKERS)}); refusing to replace it even with {force_flag}")


#: ``DataConfig`` fields whose folders are read by their sub-folders (a word, a class each): a run folder
#: written inside one would join the data of the next run (its curves.png a photo of a class of its name).
_CLASS_FOLDER_FIELDS = ("speech_commands", "synthetic_speech", "scenes", "av", "scene_ambient")


def check_out_outside_data(out_dir: Path, data: object, flag: str = "--out") -> None:
    """ValueError naming ``flag`` when ``out_dir`` lies inside a folder of ``data`` (a ``DataConfig``)
    whose sub-folders are read as words or classes."""
    target = Path(os.path.realpath(out_dir))
    for name in _CLASS_FOLDER_FIELDS:
        value = getattr(data, name)
        for folder in value if isinstance(value, tuple) else (value,):
            if folder is None:
                continue
            root = Path(os.path.realpath(folder))
            if target == root or root in target.parents:
                raise ValueError(f"{flag} {out_dir}: inside data.{name} ({folder}), whose sub-folders are read as "
                                 "words or classes: the run would join the data of the next run; choose another "
                                 f"{flag}")


def keras_archive_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a saved Keras model (a zip archive with its weights), or None."""
    try:
        if not zipfile.is_zipfile(path):
            return "is not a Keras model (not a zip archive)"
        with zipfile.ZipFile(path) as archive:
            if KERAS_WEIGHTS_ENTRY not in archive.namelist():
                return f"is not a Keras model (a zip archive without {KERAS_WEIGHTS_ENTRY})"
    except (OSError, zipfile.BadZipFile) as exc:
        return f"cannot be read ({exc})"
    return None


def check_init_from(run_dir: Path, out_dir: Path | None = None, flag: str = "--init-from",
                    out_flag: str = "--out") -> Path:
    """``run_dir`` when it is a run folder with a model that Keras can open (ValueError naming
    ``flag`` otherwise); it may not be ``out_dir``, which training replaces."""
    if not run_dir.is_dir():
        what = "no such folder" if not run_dir.exists() else "is a file"
        raise ValueError(f"{flag} {run_dir}: {what}; expected a run folder with {MODEL_FILE}")
    if not (run_dir / MODEL_FILE).is_file():
        raise ValueError(f"{flag} {run_dir}: expected a run folder with {MODEL_FILE}, found none")
    problem = keras_archive_problem(run_dir / MODEL_FILE)
    if problem is not None:
        raise ValueError(f"{flag} {run_dir}: expected a run folder with a saved {MODEL_FILE}, but its "
                         f"{MODEL_FILE} {problem}")
    if out_dir is not None and out_dir.exists() and run_dir.resolve() == out_dir.resolve():
        raise ValueError(f"{flag} {run_dir}: the same folder as {out_flag}, which this run replaces; choose "
                         f"another {out_flag}")
    return run_dir


def _staging_dir(out_dir: Path, what: str) -> Path:
    """A hidden sibling of ``out_dir`` (of the folder it links to) that this process owns."""
    target = Path(os.path.realpath(out_dir))
    return target.parent / f".{target.name}.{what}-{os.getpid()}"


#: The folders :func:`start_staging` made above each staging folder (``--out runs/new/v1``: ``runs/new``), which
#: :func:`discard_staging` removes again: a run that fails or is interrupted leaves no empty folder.
_MADE_FOR: dict[Path, tuple[Path, ...]] = {}
#: The open staging folders of this process, locked (``flock``) as long as the run lives: the kernel lets go of
#: the lock when the process dies, however it dies (the OOM killer's SIGKILL), and a later run into the same
#: ``--out`` removes a staging folder whose lock it can take (:func:`_remove_dead_staging`).
_LOCKS: dict[Path, int] = {}


def _lock(path: Path) -> tuple[Literal["locked", "held", "unsupported"], int | None]:
    """Take the lock of ``path`` (a folder or a file) without waiting: ``("locked", fd)`` (keep ``fd`` open to hold
    it), ``("held", None)`` while a living process holds it, ``("unsupported", None)`` where the file system (or the
    system: Windows) has no locks, or ``path`` cannot be opened."""
    if fcntl is None:
        return "unsupported", None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "unsupported", None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return "held", None
    except OSError:
        os.close(fd)
        return "unsupported", None
    return "locked", fd


def _release(staging: Path) -> None:
    fd = _LOCKS.pop(staging, None)
    if fd is not None:
        os.close(fd)


#: File systems whose locks and process ids are this machine's alone. On others (NFS, sshfs and other FUSE file
#: systems, SMB shares, 9p) a lock may be taken on this host only, and a process id be another host's: a living run
#: elsewhere would look killed, and leftovers are never swept there.
LOCAL_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "tmpfs", "overlay", "bcachefs",
                                "jfs", "reiserfs"})
_MOUNTS = Path("/proc/self/mounts")
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")  # a space in a mount point is \040


def file_system_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the file system that holds ``path`` (from ``mounts``, the text of ``/proc/self/mounts``, read
    when None); None where it is not known (no /proc: not Linux)."""
    if mounts is None:
        try:
            mounts = _MOUNTS.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    real = os.path.realpath(path)
    best, kind = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _MOUNT_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[1])
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def may_sweep(folder: Path) -> bool:
    """Whether what killed processes left in ``folder`` can be told from a living process's files: its file system
    is one of :data:`LOCAL_FILE_SYSTEMS`."""
    return file_system_type(folder) in LOCAL_FILE_SYSTEMS


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's too): a file a writer holds is left alone while it does."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def dead_leftovers(folder: Path, pattern: re.Pattern[str], *, folders: bool) -> Iterator[tuple[Path, int]]:
    """What processes killed at once (SIGKILL: the OOM killer, a power cut) left in ``folder``: its folders
    (``folders``) or files named by ``pattern``, whose first group is the process id of their writer, that are not
    this process's, whose lock nobody holds and whose process is gone; none on a file system where that cannot be
    told (:func:`may_sweep`). ``(path, process id)``, each yielded while its lock is held, for the caller to
    remove."""
    if not may_sweep(folder):
        return
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or int(match[1]) == os.getpid() or entry.is_dir(follow_symlinks=False) != folders:
            continue
        _, fd = _lock(Path(entry.path))
        if fd is None:  # alive, or no locks here to tell
            continue
        try:
            if not process_alive(int(match[1])):  # alive: it has made its file or folder and not yet locked it
                yield Path(entry.path), int(match[1])
        finally:
            os.close(fd)


def _remove_dead_staging(target: Path) -> None:
    """Remove the staging folders of ``target`` (an ``--out``) that killed runs left (:func:`dead_leftovers`).
    Never a ``.replaced-`` folder (a kill between :func:`commit_run`'s renames leaves the only copy of the earlier
    run there)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.training-(\d+)(?:-\d+)?")
    for folder, pid in dead_leftovers(target.parent, pattern, folders=True):
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed %s, left by a run that was killed (process %d)", folder, pid)


def _say_hidden_runs(out_dir: Path, target: Path, flag: str) -> None:
    """Say, a warning line each, the ``.NAME.replaced-PID`` folders of ``target`` (an ``--out``) that runs killed
    between :func:`commit_run`'s renames left (:func:`dead_leftovers`): each holds the run that was in ``--out``
    before, hidden, and its only copy: never removed."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.replaced-(\d+)")
    for folder, pid in dead_leftovers(target.parent, pattern, folders=True):
        try:
            files = sorted(p.name for p in folder.iterdir())
        except OSError:
            files = []
        shown = ", ".join(files[:_SHOWN_FILES]) + (", ..." if len(files) > _SHOWN_FILES else "") or "no files"
        what = "the earlier run" if any(name in files for name in RUN_MARKERS) else "what was"
        log.warning("%s %s: the hidden folder %s holds %s in %s (%s), set aside by a run killed while it replaced "
                    "it (process %d); kept: move it back or delete it", flag, out_dir, folder, what, flag, shown, pid)


def start_staging(out_dir: Path, flag: str = "--out") -> Path:
    """Make the hidden folder beside ``out_dir`` that a run is written into until :func:`commit_run`, locked while
    this process lives; staging folders of ``out_dir`` that killed runs left are removed first, and an earlier run
    that one left hidden (:func:`_say_hidden_runs`) is said.
    ValueError naming ``flag`` when nothing can be written there (a read-only folder, a file in the way)."""
    staging = _staging_dir(out_dir, "training")
    made = tuple(p for p in staging.parents if not p.exists())  # the deepest first
    _remove_dead_staging(Path(os.path.realpath(out_dir)))
    _say_hidden_runs(out_dir, Path(os.path.realpath(out_dir)), flag)
    base, number = staging, 1
    try:
        while True:
            if staging.exists():  # left by a killed process of the same id, or a living one of another container
                state, fd = _lock(staging)
                if state == "held":
                    number += 1
                    staging = base.with_name(f"{base.name}-{number}")
                    continue
                try:
                    shutil.rmtree(staging)
                finally:
                    if fd is not None:
                        os.close(fd)
            staging.mkdir(parents=True)
            break
    except OSError as exc:
        raise ValueError(f"{flag} {out_dir}: cannot write a run there ({exc.strerror or exc})") from None
    _, fd = _lock(staging)
    if fd is not None:
        _LOCKS[staging] = fd
    _MADE_FOR[staging] = made
    return staging


def discard_staging(staging: Path) -> None:
    """Remove a staging folder that :func:`commit_run` did not move (a failed or interrupted run),
    and the folders above it that :func:`start_staging` made, where they are still empty."""
    shutil.rmtree(staging, ignore_errors=True)
    _release(staging)
    for folder in _MADE_FOR.pop(staging, ()):
        try:
            folder.rmdir()
        except OSError:  # something else was written there meanwhile
            return


def _kept_aside(out_dir: Path) -> Path:
    """A free visible name beside ``out_dir`` for a complete run that could not go there."""
    target = Path(os.path.realpath(out_dir))
    for number in range(2, 1000):
        candidate = target.with_name(f"{target.name}-{number}")
        if not candidate.exists():
            return candidate
    return target.with_name(f"{target.name}-{os.getpid()}")


def commit_run(staging: Path, out_dir: Path, replace: bool, flag: str = "--out", force_flag: str = "--force") -> None:
    """Move the complete run in ``staging`` to ``out_dir``, over an earlier run only with ``replace``.
    When ``out_dir`` changed while the run trained (another run was written there) so that it may not
    be replaced, the run is kept beside it under a free name, and a ValueError says where."""
    target = Path(os.path.realpath(out_dir))
    _MADE_FOR.pop(staging, None)  # they hold the run now
    try:
        _commit(staging, out_dir, target, replace, flag, force_flag)
    finally:
        _release(staging)


def _commit(staging: Path, out_dir: Path, target: Path, replace: bool, flag: str, force_flag: str) -> None:
    try:
        check_out_dir(out_dir, replace, flag, force_flag)
        if replace and target.is_dir() and any(target.iterdir()):
            old = _staging_dir(out_dir, "replaced")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            _move_into(staging, target)  # fails, replacing nothing, when another run has filled the folder meanwhile
        return
    except (ValueError, OSError):
        pass
    kept = _kept_aside(out_dir)
    staging.rename(kept)
    raise ValueError(f"{flag} {out_dir}: files were written there while this run trained, which it does not replace "
                     f"unasked; the run was kept in {kept}")


def _move_into(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, which is new or an empty folder. Windows renames over no folder, not even an
    empty one (a ``--out`` made beforehand): the empty folder is removed first there. A folder that is not empty
    is never removed (``rmdir`` refuses it): the OSError is the caller's."""
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        target.rmdir()
        staging.rename(target)


@contextlib.contextmanager
def staged_run(out_dir: Path, replace: bool, flag: str = "--out", force_flag: str = "--force") -> Iterator[Path]:
    """The staging folder of a run (:func:`start_staging`) to write it into: moved to ``out_dir`` when the block
    ends (:func:`commit_run`), removed when it raises (:func:`discard_staging`), Ctrl-C included."""
    staging = start_staging(out_dir, flag=flag)
    try:
        yield staging
        commit_run(staging, out_dir, replace, flag=flag, force_flag=force_flag)
    except BaseException:
        discard_staging(staging)
        raise
