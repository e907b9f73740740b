"""An on-disk cache of computed arrays (features, teacher embeddings, teacher outputs).

Entries are keyed by the *content* they were computed from (the clips' samples, not their
paths), the options that shaped them and the augmentation seed, so a changed file, option or
seed gives a new key and a stale entry is never read. The folder is ``data.cache_dir`` when set,
else ``$EDGESENSE_CACHE``, else ``~/.cache/edgesense``; it is never part of a run or the repo.

An entry is written to a file of its writer's own (a random name, created exclusively, locked while
it is written) and renamed over its place once whole, so runs that share the folder (two trainings at
once, containers whose processes have the same id) never write into one file; the next writer of an
entry removes the files of it that killed writers left (their lock free, their process gone). A cache
that cannot be written (a full disk, a read-only folder) is a warning: the run goes on with what it
computed. No entry is ever removed: the folder grows with every new data, option or seed, and any entry
(or the whole folder) may be deleted at any time, to be recomputed when next needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

try:
    import fcntl
except ImportError:  # Windows: no flock; a partial file's writer is then told alive by its process alone
    fcntl = None  # type: ignore[assignment]

import numpy as np

from edgesense.train.runfolder import dead_leftovers

__all__ = ["CACHE_ENV", "ArrayCache", "content_key", "default_cache_dir", "file_sha256", "partial_path",
           "remove_dead_partials", "replace_files"]

log = logging.getLogger(__name__)

CACHE_ENV = "EDGESENSE_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/edgesense"
CACHE_FORMAT = 1  #: bump when what an entry holds changes
_READ_CHUNK_BYTES = 1 << 20


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _feed(digest: Any, part: Any) -> None:
    if isinstance(part, np.ndarray):
        digest.update(f"ndarray:{part.dtype.str}:{part.shape}:".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, (list, tuple)):
        digest.update(f"seq:{len(part)}:".encode())
        for item in part:
            _feed(digest, item)
    else:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    digest.update(b";")


def content_key(*parts: Any) -> str:
    """A hex key over arrays (by dtype, shape and bytes), sequences and JSON-able values."""
    digest = hashlib.sha256(f"edgesense-cache-{CACHE_FORMAT}".encode())
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()[:32]


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read a chunk at a time (a model, a bundle's file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_READ_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def partial_path(path: Path, *, keep_suffix: bool = False) -> Path:
    """A name beside ``path`` for one writer's file in the making: this process's id and a random part (two
    containers' processes may share an id), ending in ``.partial`` (so that no ``*.tflite`` listing finds it)
    or, with ``keep_suffix``, in ``.partial`` and ``path``'s suffix (Keras saves only to ``.keras``)."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(8)}.partial"
                          f"{path.suffix if keep_suffix else ''}")


def _create_locked(partial: Path) -> int:
    """Create ``partial`` (no other writer's file: ``FileExistsError`` if it is there) and lock it for as long as
    the descriptor returned stays open (where the file system has locks): its writer is alive."""
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def remove_dead_partials(path: Path, *, keep_suffix: bool = False) -> None:
    """Remove the partial files of ``path`` (:func:`partial_path`) that writers killed while writing (SIGKILL, the
    OOM killer, a power cut) left behind: those whose lock is free and whose process is gone. Each would stay for
    good, as large as the entry, and a cache would only grow with them."""
    suffix = re.escape(path.suffix) if keep_suffix else ""
    pattern = re.compile(rf"{re.escape(path.name)}\.(\d+)-[0-9a-f]+\.partial{suffix}")
    for partial, _ in dead_leftovers(path.parent, pattern, folders=False):
        with contextlib.suppress(OSError):  # gone meanwhile
            partial.unlink()
            log.debug("removed %s, left by a writer that was killed", partial)


def replace_files(writers: Mapping[Path, Callable[[Path], None]], *, keep_suffix: bool = False) -> None:
    """Write a set of files that belong together (a model and its sidecar), each whole: ``writers`` maps each
    path to a function that writes the file it is given. Every file is first written to a partial file of its
    own (:func:`partial_path`); then the *last* path's old file (the sidecar that vouches for the others) is
    removed, and the files are renamed over their paths in ``writers``' order. A run killed at any point, or a
    process reading the folder meanwhile, finds the old files or the new ones, each whole, or the others without
    the last one (to be written again), never part of a file nor an old sidecar beside a new model. The partial
    files (:func:`partial_path`, ``keep_suffix`` passed on) are removed when a writer fails; those a killed run
    left, never read, are removed by the next run that writes the same paths (:func:`remove_dead_partials`)."""
    if not writers:
        return
    partials: dict[Path, Path] = {}
    locks: list[int] = []
    try:
        for path, write in writers.items():
            remove_dead_partials(path, keep_suffix=keep_suffix)
            partial = partials[path] = partial_path(path, keep_suffix=keep_suffix)
            locks.append(_create_locked(partial))
            write(partial)
        *_, last = partials
        last.unlink(missing_ok=True)
        for path, partial in partials.items():
            os.replace(partial, path)
    except BaseException:
        for partial in partials.values():
            with contextlib.suppress(OSError):
                partial.unlink()
        raise
    finally:
        for fd in locks:
            os.close(fd)


class ArrayCache:
    """``get_or_compute(kind, key, compute)``: arrays saved as ``<root>/<kind>/<key>.npz``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.npz"

    def get_or_compute(self, kind: str, key: str,
                       compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        path = self.path(kind, key)
        if path.is_file():
            try:
                with np.load(path) as stored:
                    out = {name: stored[name] for name in stored.files}
                self.hits += 1
                return out
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # half-written or corrupt: recomputed
                log.warning("cache entry %s unreadable (%s); recomputing", path, exc)
        self.misses += 1
        arrays = compute()
        self._store(path, arrays)
        return arrays

    def _store(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        """``arrays`` at ``path``, whole or not at all: written to a file no other writer can hold,
        then renamed over ``path``. A failure to write (OSError) is logged; the run keeps ``arrays``."""
        partial = partial_path(path, keep_suffix=True)  # ends in .partial.npz, as before
        created = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_dead_partials(path, keep_suffix=True)
            with open(_create_locked(partial), "wb") as file:  # locked until closed: a living writer's
                created = True
                np.savez(file, **arrays)
            os.replace(partial, path)
        except BaseException as exc:
            if created:
                with contextlib.suppress(OSError):
                    partial.unlink()
            if not isinstance(exc, OSError):
                raise
            log.warning("cache entry %s not written (%s): this run goes on without it", path, exc)
