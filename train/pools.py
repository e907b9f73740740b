"""Recordings split by file into a training pool and an evaluation pool (and, for other
people's speech, a tuning pool).

Every recording-derived set (noise, music, ambience, other people's speech) is split by
recording, never by snippet: a recording whose snippets trained the model never appears in
an evaluation stream. The rule is a hash of the recording's folder and file name, so it is
the same on every machine and for every tool (the trainer draws from ``training``, the
benchmark's streams from ``evaluation``). Within each group (a folder, with music apart from
other noise) at least one recording goes to each pool when the group has two or more. A group is
the folder's recordings, not the ones a caller names: a recording named alone (``--noise
noise/exercise_bike.wav``) is ranked among the recordings beside it, so it lands in the pool it has
when its folder is named (alone it made a group of one, always training: evaluation material
trained or mined on), and a recording named twice (a relative and an absolute path) counts once.

Other people's speech (:func:`speech_negative_pools`) also keeps a **tuning** pool that
neither trains nor evaluates: the benchmark chooses its operating point on it. A model that
learned talk as ``_unknown_`` is quiet on the very talk it learned, so an operating point chosen
on the training pool fires on talk it never heard. Noise (14 recordings in all) has no tuning
pool: its training pool serves the tuning streams.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

from edgesense.schema.validate import require
from edgesense.train.hashing import hash_percent

__all__ = ["EVALUATION_PERCENT", "POOLS", "TUNING_PERCENT", "is_recording", "place_sound_files", "pool_of",
           "say_held_out", "speech_negative_pools", "split_recordings", "visible_files", "wav_recordings"]

logger = logging.getLogger(__name__)

Pool = Literal["training", "tuning", "evaluation"]
POOLS: tuple[Pool, ...] = ("training", "tuning", "evaluation")
EVALUATION_PERCENT = 30.0  #: share of each group's recordings kept for evaluation
TUNING_PERCENT = 20.0  #: share of each group of other people's speech kept for choosing the operating point
POOL_SALT = "edgesense-pools"
_MUSIC_PREFIX = "music"
_PERCENT = 100.0
RECORDING_SUFFIX = ".wav"
#: Audio formats that are not read (only WAV is): :func:`wav_recordings` counts a folder's files of these in a warning.
OTHER_AUDIO_SUFFIXES = (".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".webm")
_UNREAD_EXAMPLES = 3


def is_recording(path: Path) -> bool:
    """Whether ``path``'s name is a WAV recording's: the suffix in any case (``.WAV``), not hidden
    (``._NAME.wav``, the resource forks macOS leaves on shared drives, hold no audio)."""
    return path.suffix.lower() == RECORDING_SUFFIX and not path.name.startswith(".")


def visible_files(folder: str | Path) -> Iterator[Path]:
    """Every file name under ``folder``, searched recursively: linked folders followed, each real folder
    once (a link back up the tree cannot loop), hidden files and folders (a leading ``.``) left out.
    Folders are walked in name order, not the file system's: a real folder reached by two names (a link
    beside it) is named by the first of them in that order on every machine, and the pools hash that name."""
    walked: set[str] = set()
    for root, subfolders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            subfolders[:] = []
            continue
        walked.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        yield from (Path(root) / name for name in sorted(names) if not name.startswith("."))


def wav_recordings(paths: Iterable[str | Path]) -> list[Path]:
    """The WAV files under ``paths`` (:func:`is_recording`; folders searched with :func:`visible_files`,
    files as they are), sorted. A folder's recordings in other formats (``.flac``, ``.mp3``, ...) are not
    read: one warning counts them."""
    files: set[Path] = set()
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            files.add(p)
            continue
        found = list(visible_files(p))
        files.update(filter(is_recording, found))
        other = sorted(f for f in found if f.suffix.lower() in OTHER_AUDIO_SUFFIXES)
        if other:
            more = ", ..." if len(other) > _UNREAD_EXAMPLES else ""
            logger.warning("%s: %d audio files are not read (only %s recordings are; convert them, e.g. ffmpeg -i "
                           "NAME.flac NAME.wav): %s%s", p, len(other), RECORDING_SUFFIX,
                           ", ".join(str(f.relative_to(p)) for f in other[:_UNREAD_EXAMPLES]), more)
    return sorted(files)


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _stored_name(folder: Path, name: str, listings: dict[Path, set[str]]) -> str:
    """``name`` as ``folder`` stores it: where a case-insensitive file system (macOS, Windows) finds ``Noise`` for a
    folder stored as ``noise``, the stored name (the one hashed on every other machine and by every other tool, and
    the one :func:`visible_files` lists); a name found as it is given (always, on Linux) is kept as it is."""
    if folder not in listings:
        try:
            listings[folder] = set(os.listdir(folder))
        except OSError:
            listings[folder] = set()
    if name in listings[folder] or name in ("", ".", ".."):
        return name
    read = unicodedata.normalize("NFC", name).casefold()
    for stored in sorted(listings[folder]):
        if unicodedata.normalize("NFC", stored).casefold() == read:
            try:
                if os.path.samefile(folder / name, folder / stored):
                    return stored
            except OSError:
                pass
    return name


def _as_stored(path: Path, listings: dict[Path, set[str]]) -> Path:
    """``path`` with its folder's name and its own as stored (:func:`_stored_name`): what its pool is drawn from."""
    folder = path.parent
    folder = folder.parent / _stored_name(folder.parent, folder.name, listings) if folder.name else folder
    return folder / _stored_name(folder, path.name, listings)


def _recordings_beside(folder: Path) -> list[Path]:
    """The recordings directly in ``folder`` as :func:`visible_files` lists them (none where it cannot be read)."""
    _, _, names = next(os.walk(folder, followlinks=True), ("", [], []))
    return [folder / name for name in names if is_recording(folder / name)]


def _group(path: Path) -> str:
    kind = _MUSIC_PREFIX if path.stem.lower().startswith(_MUSIC_PREFIX) else "other"
    return f"{path.parent.name}:{kind}"


def split_recordings(paths: Iterable[str | Path], *, evaluation_percent: float = EVALUATION_PERCENT,
                     tuning_percent: float = 0.0) -> dict[Pool, list[Path]]:
    """``{"training": [...], "tuning": [...], "evaluation": [...]}``, each sorted; see the module
    docstring. ``tuning`` is empty unless ``tuning_percent`` > 0; it never takes a group's last
    training recording, and the evaluation pool does not depend on it."""
    require(0 < evaluation_percent < _PERCENT, "evaluation_percent", "a number in (0, 100)", evaluation_percent)
    require(0 <= tuning_percent < _PERCENT - evaluation_percent, "tuning_percent",
            f"a number in [0, {_PERCENT - evaluation_percent:g})", tuning_percent)
    given = sorted({Path(p) for p in paths})
    listings: dict[Path, set[str]] = {}
    stored = {p: _as_stored(p, listings) for p in given}  # a name as typed on a Mac (Noise/) hashed as on disk
    groups: dict[str, dict[str, Path]] = {}  # each group's recordings, one per absolute path
    for p in [*stored.values(), *(q for folder in sorted({p.parent for p in stored.values()})
                                  for q in _recordings_beside(folder))]:
        groups.setdefault(_group(p), {}).setdefault(os.path.abspath(p), p)
    pool_at: dict[str, Pool] = {}
    for members in groups.values():
        ranked = sorted(members.values(), key=lambda p: (hash_percent(_key(p), POOL_SALT), _key(p)))
        count = round(len(ranked) * evaluation_percent / _PERCENT)
        if len(ranked) >= 2:
            count = min(max(count, 1), len(ranked) - 1)
        tune = round(len(ranked) * tuning_percent / _PERCENT)
        if tuning_percent > 0 and len(ranked) >= 3:
            tune = max(tune, 1)
        tune = max(0, min(tune, len(ranked) - count - 1))
        for rank, p in enumerate(ranked):
            pool_at[os.path.abspath(p)] = "evaluation" if rank < count else "tuning" if rank < count + tune \
                else "training"
    out: dict[Pool, list[Path]] = {pool: [] for pool in POOLS}
    for p in given:  # only the recordings named, each in its place among its folder's
        out[pool_at[os.path.abspath(stored[p])]].append(p)
    return out


def speech_negative_pools(paths: Iterable[str | Path]) -> dict[Pool, list[Path]]:
    """Other people's speech split three ways (:data:`TUNING_PERCENT` kept for tuning); the
    trainer and the benchmark both split it with this."""
    return split_recordings(paths, tuning_percent=TUNING_PERCENT)


def pool_of(path: str | Path, siblings: Iterable[str | Path], *, evaluation_percent: float = EVALUATION_PERCENT
            ) -> Pool:
    """The pool ``path`` belongs to among ``siblings`` (the whole collection it was split with)."""
    split = split_recordings([path, *siblings], evaluation_percent=evaluation_percent)
    return next(pool for pool in POOLS if Path(path) in split[pool])


def say_held_out(field: str, named: Iterable[str | Path], pools: Mapping[str, Sequence[Path]]) -> list[Path]:
    """The recordings named alone in ``named`` (files, not folders) that ``pools`` keep out of training (their
    folder's tuning or evaluation pool, :func:`split_recordings`), each said in a warning naming ``field``: a user
    who names one file expects it used, and it is not."""
    files = {Path(p) for p in named if not Path(p).is_dir()}
    held = [(p, pool) for pool in POOLS if pool != "training" for p in pools.get(pool, ()) if p in files]
    for path, pool in sorted(held):
        logger.warning("%s %s: in the %s pool of its folder's recordings (the benchmark's, as when the folder is "
                       "named), so it is not trained or mined on", field, path, pool)
    return sorted(p for p, _ in held)


def place_sound_files(scene_ambient: Path | None, scene_labels: Sequence[str], training_items: Sequence[Any],
                      *, field: str = "data.scene_ambient") -> tuple[dict[str, list[Path]], dict[str, list[str]]]:
    """The recordings that may teach each scene class its sound: the *training* pool of
    ``scene_ambient`` (``CLASS/*.wav``, split by recording with
    :func:`split_recordings`; the evaluation pool is the benchmark's) and the
    sounds of the paired photos among ``training_items`` (those with an ``audio_path``:
    :class:`edgesense.train.data.AVItem`; photos alone have none).

    Returns ``({label: [paths]}, {"training": [...], "evaluation": [...]})`` (``CLASS/NAME`` of
    each pool; empty without ``scene_ambient``). A class folder not named like a scene class, or
    a folder without recordings, is a ValueError naming ``field``."""
    paths: dict[str, list[Path]] = {label: [] for label in scene_labels}
    pools: dict[str, list[str]] = {}
    if scene_ambient is not None:
        folders = [p for p in sorted(Path(scene_ambient).iterdir()) if p.is_dir() and not p.name.startswith(".")]
        unknown = [p.name for p in folders if p.name not in paths]
        require(not unknown, field, f"class folders named like the scene classes {list(scene_labels)}", unknown)
        recordings = [p for folder in folders for p in sorted(folder.iterdir()) if p.is_file() and is_recording(p)]
        require(bool(recordings), field, f"CLASS/*.wav recordings under {scene_ambient}", "none")
        split = split_recordings(recordings)
        for p in split["training"]:
            paths[p.parent.name].append(p)
        pools = {pool: [f"{p.parent.name}/{p.name}" for p in files] for pool, files in split.items()}
    for item in training_items:
        if getattr(item, "audio_path", None) is not None:
            paths[item.label].append(item.audio_path)
    return paths, pools
