"""Datasets on disk -> indexes -> arrays: Speech Commands audio, image folders, paired audio-visual folders.

Indexes hold paths and labels only; :func:`load_clips` and :func:`load_images` decode
them with the device's own code (:mod:`edgesense.frontend.wav`, :mod:`edgesense.frontend.audio`), so
training sees exactly the numbers the device will. A file that cannot be read is
skipped, logged and named in the :class:`LoadReport`; the report's ``kept`` indices
say which items the returned rows belong to.

Splits are deterministic and stable across machines: audio by speaker with the
Speech Commands ``which_set`` rule (sha1 of the speaker id), silence snippets cut from
background noise by their recording's pool (:mod:`edgesense.train.pools`), images by a
hash of the file stem. A ``_silence_`` folder's clips (named by a number, as in Speech Commands'
test set) are split by name; the trainer leaves out of training those whose content is a stretch
of an evaluation-pool recording (:func:`without_snippets_of`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from edgesense.frontend.audio import AudioFrontendOptions, fit_clip
from edgesense.frontend.image import ImageFrontendOptions, preprocess_frame
from edgesense.frontend.wav import probe_wav, read_wav
from edgesense.schema.validate import require, require_kinds
from edgesense.train.hashing import MAX_NUM_WAVS_PER_CLASS, hash_percent
from edgesense.train.pools import OTHER_AUDIO_SUFFIXES, split_recordings
from edgesense.types import DEFAULT_COMMAND_WORDS, SILENCE_LABEL, UNKNOWN_LABEL, label_as_read

__all__ = [
    "AVIndex",
    "AVItem",
    "AudioItem",
    "BACKGROUND_NOISE_DIR",
    "ImageIndex",
    "ImageItem",
    "LoadReport",
    "MAX_IMAGE_PIXELS",
    "MAX_NUM_WAVS_PER_CLASS",
    "SPLITS",
    "SpeechCommandsIndex",
    "SpeechCommandsOptions",
    "SplitSpec",
    "balanced_indices",
    "check_word_folders",
    "check_init_split",
    "check_words",
    "decode_image",
    "hash_percent",
    "image_size",
    "load_av_folder",
    "load_clips",
    "load_image_folder",
    "load_images",
    "load_noise_pool",
    "load_speech_commands",
    "say_missing_classes",
    "snippet_sources",
    "speaker_of",
    "split_image_items",
    "split_key",
    "train_every_class",
    "split_items",
    "which_set",
    "without_snippets_of",
]

logger = logging.getLogger(__name__)

BACKGROUND_NOISE_DIR = "_background_noise_"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
SPLITS = ("training", "validation", "testing")
AUDIO_SUFFIXES = (".wav",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_NOHASH = "_nohash_"
#: The pairs ``edgesense record`` writes (:mod:`edgesense.app.record`): the session's label and start time, then
#: the pair's index in the session.
RECORDED_PAIR_NAME = re.compile(r"^(?P<session>.+-\d{8}-\d{6})-(?P<index>\d+)$")
#: Recorded pairs are split in blocks of this many consecutive pairs (10 s at the 5-Hz scene rate).
RECORDED_PAIRS_PER_BLOCK = 50
_PERCENT = 100.0
_SUMMARY_EXAMPLES = 5  # skipped files named in LoadReport.summary()
#: split_items warns when a split's share is off by more than this fraction of what was asked.
_SPLIT_TOLERANCE = 0.5
_MIN_ITEMS_TO_CHECK_SPLIT = 200
#: snippet_sources: envelope hop (samples) of the coarse search, and the correlation that makes a match.
_ENVELOPE_HOP = 8
SNIPPET_MIN_CORRELATION = 0.9
_UNREAD_EXAMPLES = 3  # files not read named in a class folder's warning
#: Recordings and photos in formats that are not read: a class folder's files of these are counted in a warning.
_OTHER_MEDIA_SUFFIXES = OTHER_AUDIO_SUFFIXES + (".heic", ".heif", ".avif", ".gif", ".jp2", ".jxl", ".dng")
#: A JPEG marker after entropy-coded data: ``FF`` not followed by ``00`` (a stuffed byte), ``D0``-``D7`` (restarts)
#: or ``FF`` (fill).
_JPEG_MARKER = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = b"\xff\xd8", 0xD9, 0xDA
#: JPEG start-of-frame markers (they hold the height and width): C0-CF less DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: The most pixels a photo's header may declare (16384 x 16384, a 768 MB colour buffer): OpenCV allocates the whole
#: image before it is shrunk to the model's input, and its own bound (2**30 pixels) lets a compressed file of a few
#: hundred KB (a PNG of 20000 x 20000 pixels of one colour) take gigabytes and seconds.
MAX_IMAGE_PIXELS = 16384 * 16384
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_WIDTH_TAG, _TIFF_HEIGHT_TAG = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


# --------------------------------------------------------------------------- items and reports


@dataclass(frozen=True)
class AudioItem:
    """One audio example. ``offset_ms`` >= 0 marks a one-clip snippet cut from a longer
    recording at that offset (silence from background noise); ``None`` means the whole file."""

    path: Path
    label: str
    speaker: str
    offset_ms: int | None = None


@dataclass(frozen=True)
class ImageItem:
    path: Path
    label: str


@dataclass(frozen=True)
class AVItem:
    """A photo and the sound recorded with it (``CLASS/NAME.jpg`` + ``CLASS/NAME.wav``)."""

    image_path: Path
    audio_path: Path
    label: str


@dataclass(frozen=True, kw_only=True)
class LoadReport:
    """What a load did: ``kept`` are the indices (into the requested items) of the returned rows."""

    what: str
    requested: int
    kept: tuple[int, ...]
    skipped: tuple[tuple[Path, str], ...] = ()

    @property
    def loaded(self) -> int:
        return len(self.kept)

    def summary(self) -> str:
        text = f"{self.what}: loaded {self.loaded} of {self.requested}"
        if self.skipped:
            # a reader's reason often names the file already ("PATH: not a readable WAV file ...")
            shown = "; ".join(f"{p}: {reason.removeprefix(f'{p}: ')}" for p, reason in self.skipped[:_SUMMARY_EXAMPLES])
            extra = len(self.skipped) - _SUMMARY_EXAMPLES
            more = f"; ... and {extra} more" if extra > 0 else ""
            text += f", skipped {len(self.skipped)} ({shown}{more})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "requested": self.requested, "loaded": self.loaded,
                "skipped": [[str(p), reason] for p, reason in self.skipped]}


# --------------------------------------------------------------------------- hashing and splits


def _check_percents(validation_percent: float, testing_percent: float) -> None:
    require(0 <= validation_percent <= _PERCENT, "validation_percent", "in [0, 100]", validation_percent)
    require(0 <= testing_percent <= _PERCENT - validation_percent, "testing_percent",
             f"in [0, {_PERCENT - validation_percent:g}] (100 - validation_percent)", testing_percent)


def which_set(key: str, validation_percent: float, testing_percent: float, *, salt: str = "") -> str:
    """``"training"``, ``"validation"`` or ``"testing"`` for a speaker id (or any grouping key).

    With ``salt=""`` this is TensorFlow's rule, which reproduces the official Speech
    Commands split; any other salt gives an independent split.
    """
    _check_percents(validation_percent, testing_percent)
    p = hash_percent(key, salt)
    if p < validation_percent:
        return "validation"
    if p < validation_percent + testing_percent:
        return "testing"
    return "training"


def speaker_of(path: str | Path, *, unknown_layout: bool = False) -> str:
    """Speaker id of a clip name: the part before ``_nohash_`` (minus a ``WORD_`` prefix when
    ``unknown_layout``); the file stem when there is no ``_nohash_`` (silence clips)."""
    stem = Path(path).stem
    if _NOHASH not in stem:
        return stem
    speaker = stem.split(_NOHASH, 1)[0]
    if unknown_layout and "_" in speaker:
        speaker = speaker.rsplit("_", 1)[1]
    return speaker


def split_items(items: Sequence[AudioItem], *, validation_percent: float, testing_percent: float,
                salt: str = "", assigned: Mapping[Path, str] | None = None) -> dict[str, list[AudioItem]]:
    """Speaker-disjoint split by :func:`which_set` of each item's speaker.

    ``assigned`` (resolved path -> split, from list files) wins for the paths it names;
    with list files, other real files are training. Snippets cut from background noise
    follow their recording, never their own hash: the recordings are split into pools
    like every other recording-derived set (:func:`edgesense.train.pools.split_recordings`);
    the snippets of a training-pool recording train, and those of an evaluation-pool
    recording are held out whole, in validation or testing by the recording's hash (so no
    held-out snippet comes from a recording that trains, as silence or as noise). The
    official Speech Commands *test* set (and any subset of it) is degenerate under the
    unsalted rule: all its speakers hash into the testing band. A warning is logged when a
    split gets far fewer items than asked.
    """
    _check_percents(validation_percent, testing_percent)
    held_out = set(split_recordings({item.path for item in items if item.offset_ms is not None})["evaluation"])
    out: dict[str, list[AudioItem]] = {name: [] for name in SPLITS}
    for item in items:
        if item.offset_ms is not None:
            name = _held_out_split(item.speaker, validation_percent, testing_percent, salt=salt) \
                if item.path in held_out else "training"
        elif assigned is not None:
            name = assigned.get(item.path.resolve(), "training")
        else:
            name = which_set(item.speaker, validation_percent, testing_percent, salt=salt)
        out[name].append(item)
    if assigned is None:
        _warn_if_lopsided(out, validation_percent, testing_percent, salt)
    return out


def _held_out_split(key: str, validation_percent: float, testing_percent: float, *, salt: str) -> str:
    """``"validation"`` or ``"testing"`` for a held-out recording, in the ratio of the two percentages
    (``"training"`` when neither is asked for: the trainer still keeps the evaluation pool out)."""
    if validation_percent + testing_percent == 0:
        return "training"
    if testing_percent == 0:
        return "validation"
    share = hash_percent(key, salt) * (validation_percent + testing_percent) / _PERCENT
    return "validation" if share < validation_percent else "testing"


def _warn_if_lopsided(out: Mapping[str, list[Any]], validation_percent: float, testing_percent: float,
                      salt: str) -> None:
    total = sum(len(v) for v in out.values())
    asked = {"validation": validation_percent, "testing": testing_percent,
             "training": _PERCENT - validation_percent - testing_percent}
    for name, percent in asked.items():
        got = _PERCENT * len(out[name]) / total if total else 0.0
        if total >= _MIN_ITEMS_TO_CHECK_SPLIT and abs(got - percent) > _SPLIT_TOLERANCE * percent:
            logger.warning("speaker split: %s holds %.1f%% of %d items but %.1f%% was asked (salt=%r); "
                           "if this folder is (part of) the official test set, pass a non-empty salt",
                           name, got, total, percent, salt)


def split_key(item: Any) -> str:
    """What an image or audio-visual item is split by: its file stem, except for the pairs of an
    ``edgesense record`` session (``LABEL-YYYYmmdd-HHMMSS-NNNN``), split by block of
    ``RECORDED_PAIRS_PER_BLOCK`` consecutive pairs: neighbours share most of their 1-s sound and
    nearly the same frame, so pairs hashed one by one put near copies on both sides."""
    stem = Path(item.image_path if isinstance(item, AVItem) else item.path).stem
    recorded = RECORDED_PAIR_NAME.match(stem)
    if recorded is None:
        return stem
    return f"{recorded['session']}/{(int(recorded['index']) - 1) // RECORDED_PAIRS_PER_BLOCK}"  # pairs count from 1


def split_image_items(items: Sequence[Any], *, validation_percent: float,
                      testing_percent: float = 0.0) -> dict[str, list[Any]]:
    """Split image (or audio-visual) items by a hash of :func:`split_key`: a photo always lands on
    the same side on every machine, and a paired ``NAME.jpg``/``NAME.wav`` stays together."""
    _check_percents(validation_percent, testing_percent)
    out: dict[str, list[Any]] = {name: [] for name in SPLITS}
    for item in items:
        out[which_set(split_key(item), validation_percent, testing_percent)].append(item)
    return out


def train_every_class(split: dict[str, list[Any]], classes: Sequence[str], *, what: str) -> dict[str, list[Any]]:
    """``split`` (of :func:`split_image_items`) where every class trains: a class none of whose items fell in
    training (a short recorded place: its one block of ``RECORDED_PAIRS_PER_BLOCK`` pairs lands whole on one
    side) trains on all of them, out of validation and testing, with a warning naming it (``what``: the
    flag or field of its folder); it would otherwise be a label that never learned anything."""
    out = {name: list(items) for name, items in split.items()}
    trained = {item.label for item in out["training"]}
    for label in classes:
        if label in trained:
            continue
        moved = [item for name in ("validation", "testing") for item in out[name] if item.label == label]
        if not moved:
            continue
        for name in ("validation", "testing"):
            out[name] = [item for item in out[name] if item.label != label]
        out["training"] += moved
        logger.warning("%s %s: all %d of its pairs fell in held-out blocks (%d consecutive pairs each): it trains on "
                       "all of them and has no held-out pairs; record it longer for a figure of its own", what, label,
                       len(moved), RECORDED_PAIRS_PER_BLOCK)
    return out


def say_missing_classes(field: str, noun: str, labels: Sequence[str], counts: Mapping[str, Mapping[str, int]],
                        *, how: str) -> None:
    """A warning for each split of ``counts`` (split name -> label -> items loaded: ``training``, ``validation``,
    ``testing``) that holds items but none of some of ``labels`` (the classes of ``field``, a folder of ``noun``;
    ``how``: how it is split): a class whose few items all fell on one side of the split (a word of one speaker, a
    class of one photo) trained nothing, so the model's output for it never learned, or is not scored by that split's
    figure."""
    total = {label: sum(split.get(label, 0) for split in counts.values()) for label in labels}
    untrained = [label for label in labels if total[label] and not counts["training"].get(label, 0)]
    if untrained:
        held = ", ".join(f"{label} ({total[label]} {noun[:-1] if total[label] == 1 else noun})" for label in untrained)
        logger.warning("%s: no training %s of %s: all held out for validation and testing (%s), so the model's "
                       "output for %s learns nothing; add %s", field, noun, held, how,
                       "it" if len(untrained) == 1 else "them", f"{noun} of more speakers" if noun == "clips" else noun)
    for name, figure in (("validation", "validation figure, which picks the checkpoint,"), ("testing", "test figure")):
        split = counts.get(name) or {}
        missing = [label for label in labels if sum(split.values()) and not split.get(label, 0)]
        if missing:
            logger.warning("%s: no %s %s of %s (%s): the %s does not score %s", field,
                           "test" if name == "testing" else name, noun, ", ".join(missing), how, figure,
                           "it" if len(missing) == 1 else "them")


# --------------------------------------------------------------------------- speech commands


@dataclass(frozen=True, kw_only=True)
class SpeechCommandsOptions:
    """How to index a Speech Commands folder (besides the word list).

    ``silence_per_noise_file``: how many one-clip snippets to cut from each
    ``_background_noise_`` recording as ``_silence_`` examples (evenly spaced, no overlap
    when the recording is long enough; 0 = none). ``clip_duration_ms``: snippet length.
    """

    silence_per_noise_file: int = 40
    clip_duration_ms: int = 1000

    def __post_init__(self) -> None:
        require_kinds(self)
        require(self.silence_per_noise_file >= 0, "silence_per_noise_file", ">= 0", self.silence_per_noise_file)
        require(self.clip_duration_ms > 0, "clip_duration_ms", "> 0", self.clip_duration_ms)


def check_words(words: Sequence[str]) -> tuple[str, ...]:
    words = tuple(words) if not isinstance(words, str) else (words,)
    require(len(words) > 0 and all(isinstance(w, str) and w and not w.startswith("_") for w in words),
             "words", "a non-empty sequence of word folder names (not starting with '_')", words)
    require(len(set(words)) == len(words), "words", "no duplicates", words)
    return words


def check_word_folders(root: str | Path, words: Sequence[str], *, field: str) -> None:
    """ValueError in one line unless the Speech Commands folder ``root`` (of the training config's
    ``data.FIELD``) holds a folder for each of ``words``: it names ``data.words``, the words missing and the
    word folders ``root`` holds (a folder of one's own words, with ``data.words`` left at the default ten,
    is the usual cause). A ``root`` that is no folder is left to :func:`load_speech_commands`."""
    root = Path(root)
    if not root.is_dir():
        return
    folders = {child.name for child in root.iterdir() if child.is_dir()}
    missing = [word for word in words if word not in folders]
    if not missing:
        return
    found = sorted(name for name in folders if not name.startswith(("_", ".")))
    default = " (the default ten: a model of other words names them in data.words)" if (
        tuple(words) == DEFAULT_COMMAND_WORDS) else ""
    raise ValueError(f"data.words: expected a folder for each word{default} in data.{field} {root}, missing "
                     f"{', '.join(missing)}; its word folders: {', '.join(found) or 'none'}")


@dataclass(frozen=True, kw_only=True)
class SpeechCommandsIndex:
    """The items of a Speech Commands folder, its noise pool and (if present) its list-file split."""

    root: Path
    labels: tuple[str, ...]
    items: tuple[AudioItem, ...]
    noise_paths: tuple[Path, ...] = ()
    assigned: Mapping[Path, str] | None = None

    def __post_init__(self) -> None:
        if self.assigned is not None:
            object.__setattr__(self, "assigned", MappingProxyType(dict(self.assigned)))

    @property
    def has_list_files(self) -> bool:
        return self.assigned is not None

    def label_ids(self, items: Iterable[AudioItem] | None = None) -> np.ndarray:
        """int32 class indices (into ``labels``) of ``items`` (default: all)."""
        lookup = {label: i for i, label in enumerate(self.labels)}
        return np.array([lookup[it.label] for it in (self.items if items is None else items)], dtype=np.int32)

    def counts(self, items: Iterable[AudioItem] | None = None) -> dict[str, int]:
        c = Counter(it.label for it in (self.items if items is None else items))
        return {label: c.get(label, 0) for label in self.labels}

    def speakers(self, items: Iterable[AudioItem] | None = None) -> set[str]:
        return {it.speaker for it in (self.items if items is None else items)}

    def split(self, *, validation_percent: float = 10.0, testing_percent: float = 10.0,
              salt: str = "") -> dict[str, list[AudioItem]]:
        """Speaker-disjoint split (list files when the folder has them, else the hash rule)."""
        return split_items(self.items, validation_percent=validation_percent,
                           testing_percent=testing_percent, salt=salt, assigned=self.assigned)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return (f"{self.root}: {len(self.items)} clips from {len(self.speakers())} speakers ({counts}); "
                f"{len(self.noise_paths)} noise recordings; list files: {'yes' if self.has_list_files else 'no'}")


def _wavs(folder: Path) -> list[Path]:
    _warn_unread(folder, AUDIO_SUFFIXES)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                  and not p.name.startswith("."))


def _warn_unread(folder: Path, suffixes: tuple[str, ...]) -> None:
    """One warning counting the recordings and photos directly in a class ``folder`` that are not read: those of
    other formats (``.flac``, ``.mp3``, ``.heic``, ...) and links to nothing; hidden files (``.DS_Store``,
    ``._NAME``) and others (``notes.txt``) are not counted."""
    media = set(suffixes) | set(_OTHER_MEDIA_SUFFIXES)
    unread = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in media
                    and not p.is_dir() and (not p.is_file() or p.suffix.lower() not in suffixes))
    if unread:
        named = [p.name + ("" if p.exists() else " (a link to nothing)") for p in unread[:_UNREAD_EXAMPLES]]
        more = ", ..." if len(unread) > _UNREAD_EXAMPLES else ""
        logger.warning("%s: %d files are not read (only %s files are): %s%s", folder, len(unread),
                       "/".join(suffixes), ", ".join(named), more)


def _read_list(root: Path, name: str) -> list[Path]:
    path = root / name
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [(root / line).resolve() for line in lines if line and not line.startswith("#")]


def _silence_snippets(noise_paths: Sequence[Path], options: SpeechCommandsOptions) -> list[AudioItem]:
    items: list[AudioItem] = []
    if options.silence_per_noise_file == 0:
        return items
    for path in noise_paths:
        try:
            info = probe_wav(path)
        except ValueError as exc:
            logger.warning("skipping background noise %s: %s", path, exc)
            continue
        duration_ms = info.duration_s * 1000.0
        available = int(duration_ms // options.clip_duration_ms)
        count = min(available, options.silence_per_noise_file)
        if count == 0:
            logger.warning("background noise %s is shorter than one clip (%.0f ms); no silence cut from it",
                           path, duration_ms)
            continue
        step_ms = (duration_ms - options.clip_duration_ms) / max(count - 1, 1)
        for k in range(count):
            items.append(AudioItem(path, SILENCE_LABEL, path.stem, offset_ms=int(k * step_ms)))
    return items


def load_speech_commands(root: str | Path, *, words: Sequence[str] = DEFAULT_COMMAND_WORDS,
                         options: SpeechCommandsOptions | None = None) -> SpeechCommandsIndex:
    """Index a Speech Commands folder (v2 training layout or the canonical test layout).

    Folders named in ``words`` are those words; ``_silence_/`` and ``_unknown_/`` are those
    classes; ``_background_noise_/`` is the noise pool and the source of silence snippets;
    any other folder is an ``_unknown_`` word. ``validation_list.txt`` and
    ``testing_list.txt`` are honoured by :meth:`SpeechCommandsIndex.split` when present.
    """
    words = check_words(words)
    options = options or SpeechCommandsOptions()
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"speech commands root: expected a folder, got {str(root)!r} ({_not_a_folder(root)})")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = {p.name for p in folders}
    missing = [w for w in words if w not in names]
    if missing:
        raise ValueError(f"{root}: expected a folder for every command word, missing {', '.join(missing)}")
    special = {label_as_read(name): name for name in (*words, SILENCE_LABEL, UNKNOWN_LABEL, BACKGROUND_NOISE_DIR)}
    for folder in folders:
        twin = special.get(label_as_read(folder.name))
        if twin is not None and twin != folder.name:
            raise ValueError(f"{folder}: expected the folder of {twin!r} named exactly {twin!r} (folder names are "
                             f"case-sensitive: its clips would train as {UNKNOWN_LABEL}), found {folder.name!r}; "
                             "rename it or move its clips into it")
    items: list[AudioItem] = []
    noise_paths: tuple[Path, ...] = ()
    for folder in folders:
        wavs = _wavs(folder)
        if folder.name == BACKGROUND_NOISE_DIR:
            noise_paths = tuple(wavs)
            continue
        if not wavs:
            raise ValueError(f"{folder}: expected .wav clips in this class folder, found none")
        if folder.name in words:
            label = folder.name
        elif folder.name == SILENCE_LABEL:
            label = SILENCE_LABEL
        else:
            label = UNKNOWN_LABEL
        unknown_layout = folder.name == UNKNOWN_LABEL
        items.extend(AudioItem(p, label, speaker_of(p, unknown_layout=unknown_layout)) for p in wavs)
    items.extend(_silence_snippets(noise_paths, options))
    validation, testing = _read_list(root, VALIDATION_LIST), _read_list(root, TESTING_LIST)
    assigned: dict[Path, str] | None = None
    if validation or testing:
        assigned = {p: "validation" for p in validation}
        assigned.update({p: "testing" for p in testing})
    index = SpeechCommandsIndex(root=root, labels=(SILENCE_LABEL, UNKNOWN_LABEL) + words, items=tuple(items),
                                noise_paths=noise_paths, assigned=assigned)
    logger.info("%s", index.summary())
    return index


# --------------------------------------------------------------------------- image folders


@dataclass(frozen=True, kw_only=True)
class ImageIndex:
    root: Path
    classes: tuple[str, ...]
    items: tuple[ImageItem, ...]

    def label_ids(self, items: Iterable[ImageItem] | None = None) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[it.label] for it in (self.items if items is None else items)], dtype=np.int32)

    def counts(self) -> dict[str, int]:
        c = Counter(it.label for it in self.items)
        return {k: c.get(k, 0) for k in self.classes}

    def split(self, *, validation_percent: float = 10.0, testing_percent: float = 0.0) -> dict[str, list[ImageItem]]:
        return split_image_items(self.items, validation_percent=validation_percent, testing_percent=testing_percent)


@dataclass(frozen=True, kw_only=True)
class AVIndex:
    root: Path
    classes: tuple[str, ...]
    items: tuple[AVItem, ...]
    unpaired: tuple[Path, ...] = ()

    def label_ids(self, items: Iterable[AVItem] | None = None) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[it.label] for it in (self.items if items is None else items)], dtype=np.int32)

    def split(self, *, validation_percent: float = 10.0, testing_percent: float = 0.0) -> dict[str, list[AVItem]]:
        return split_image_items(self.items, validation_percent=validation_percent, testing_percent=testing_percent)


def _not_a_folder(path: Path) -> str:
    return "a file" if path.exists() else "does not exist"


def class_label(folder: Path) -> str:
    """The class a class folder names: its name as text, the characters its UTF-8 bytes spell (in a C locale
    without UTF-8 mode Python reads ``café`` as ``caf\\udcc3\\udca9``). ValueError naming the folder when its name
    is not UTF-8 (a Latin-1 ``küche`` from an old archive): the label goes into the model, its events and MQTT,
    which are UTF-8, and every event of that class would be lost."""
    try:
        data = bytes(Path(folder.name))  # the name's bytes (os.fsencode), as the locale wrote them
    except UnicodeEncodeError:  # characters the locale cannot write: as they are
        data = folder.name.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        shown = data.decode("utf-8", "backslashreplace")  # Latin-1 ü: \xfc, not the escape \udcfc
        raise ValueError(f"{folder}: expected a class folder whose name is UTF-8 (it is the class's label in the "
                         f"model and its events), got one whose bytes are not ({shown}): rename it (e.g. convmv -f "
                         "latin1 -t utf8 --notest NAME)") from None


def _class_folders(root: Path, what: str) -> list[Path]:
    if not root.is_dir():
        raise ValueError(f"{what} root: expected a folder, got {str(root)!r} ({_not_a_folder(root)})")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: expected one sub-folder per class, found none")
    seen: dict[str, str] = {}
    for folder in folders:
        label = class_label(folder)
        twin = seen.setdefault(label_as_read(label), label)
        if twin != label:
            raise ValueError(f"{root}: expected class folders whose names differ in more than case or Unicode form, "
                             f"found {twin!r} and {label!r} (two classes that read alike); merge them")
    return folders


def _files(folder: Path, suffixes: tuple[str, ...], *, say_unread: bool = True) -> list[Path]:
    """The files of ``suffixes`` (any case, not hidden) directly in a class ``folder``; those in its
    sub-folders are not read, and a warning says how many there are (and, with ``say_unread``, another
    counts the files of other formats beside them, :func:`_warn_unread`)."""
    if say_unread:
        _warn_unread(folder, suffixes)
    nested = sorted(p for sub in folder.iterdir() if sub.is_dir() and not sub.name.startswith(".")
                    for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                    and not p.name.startswith("."))
    if nested:
        logger.warning("%s: %d files in its sub-folders (e.g. %s) are not read: a class's files lie directly in "
                       "its folder (CLASS/NAME)", folder, len(nested), nested[0].relative_to(folder))
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                  and not p.name.startswith("."))


def load_image_folder(root: str | Path) -> ImageIndex:
    """Index ``root/CLASS/*.jpg|jpeg|png|bmp|webp|tif|tiff``; classes are the sorted folder names."""
    root = Path(root)
    items: list[ImageItem] = []
    folders = _class_folders(root, "image folder")
    for folder in folders:
        files = _files(folder, IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{folder}: expected images ({'/'.join(IMAGE_SUFFIXES)}) in this class folder, found none")
        items.extend(ImageItem(p, class_label(folder)) for p in files)
    return ImageIndex(root=root, classes=tuple(class_label(f) for f in folders), items=tuple(items))


def load_av_folder(root: str | Path) -> AVIndex:
    """Index paired photos and sounds: ``root/CLASS/NAME.<image>`` + ``root/CLASS/NAME.wav``.

    Files without a partner are listed in ``unpaired`` (and logged), not indexed.
    """
    root = Path(root)
    items: list[AVItem] = []
    unpaired: list[Path] = []
    folders = _class_folders(root, "audio-visual folder")
    for folder in folders:
        _warn_unread(folder, IMAGE_SUFFIXES + AUDIO_SUFFIXES)
        images = {p.stem: p for p in _files(folder, IMAGE_SUFFIXES, say_unread=False)}
        sounds = {p.stem: p for p in _files(folder, AUDIO_SUFFIXES, say_unread=False)}
        paired = sorted(images.keys() & sounds.keys())
        if not paired:
            raise ValueError(f"{folder}: expected NAME.jpg + NAME.wav pairs in this class folder, found none")
        items.extend(AVItem(images[s], sounds[s], class_label(folder)) for s in paired)
        unpaired.extend(sorted([images[s] for s in images.keys() - sounds.keys()]
                               + [sounds[s] for s in sounds.keys() - images.keys()]))
    if unpaired:
        logger.warning("%s: %d files have no partner (image without .wav or .wav without image), e.g. %s",
                       root, len(unpaired), unpaired[0])
    return AVIndex(root=root, classes=tuple(class_label(f) for f in folders), items=tuple(items),
                   unpaired=tuple(unpaired))


# --------------------------------------------------------------------------- loading arrays


def _progress(iterable: Iterable[Any], total: int, what: str, *, unit: str = "file") -> Iterable[Any]:
    """``iterable`` with a progress bar on stderr, drawn only where stderr is a terminal (``disable=None``: a CI
    log or the journal gets no bar, only the lines of :func:`phase`) and gone once done."""
    from tqdm import tqdm  # here, not at the top: a config loads (and is checked) without the desktop libraries

    return tqdm(iterable, total=total, desc=what, unit=unit, disable=None, leave=False)


@contextlib.contextmanager
def phase(log: logging.Logger, what: str, *args: Any) -> Iterator[None]:
    """Say, as info lines on stderr, that a long phase starts (``what % args``: what, how many) and that it ended
    and how long it took: one line each, also where stderr is no terminal and :func:`_progress` draws no bar.
    A phase that fails says nothing more (its error does)."""
    text = what % args if args else what
    log.info("%s ...", text)
    started = time.perf_counter()
    yield
    log.info("%s: done in %.0f s", text, time.perf_counter() - started)


def _finish(what: str, requested: int, kept: list[int], skipped: list[tuple[Path, str]]) -> LoadReport:
    report = LoadReport(what=what, requested=requested, kept=tuple(kept), skipped=tuple(skipped))
    if skipped:
        logger.warning("%s", report.summary())
    else:
        logger.info("%s", report.summary())
    return report


def load_clips(items: Sequence[AudioItem], options: AudioFrontendOptions = AudioFrontendOptions(),
               *, what: str = "audio clips") -> tuple[np.ndarray, LoadReport]:
    """Decode audio items into float32 ``(N, clip_samples)`` at ``options.sample_rate_hz``.

    Whole files are centred/padded with :func:`edgesense.frontend.audio.fit_clip`; snippets
    (``offset_ms`` set) are cut from their recording. Unreadable files are skipped and
    reported (``report.kept`` maps rows to items).
    """
    n = options.clip_samples
    out = np.zeros((len(items), n), dtype=np.float32)
    kept: list[int] = []
    skipped: list[tuple[Path, str]] = []
    recordings: dict[Path, np.ndarray] = {}  # long noise files, read once
    for i, item in enumerate(_progress(items, len(items), f"loading {what}")):
        try:
            if item.offset_ms is None:
                out[len(kept)] = fit_clip(read_wav(item.path, sample_rate_hz=options.sample_rate_hz), options)
            else:
                if item.path not in recordings:
                    recordings[item.path] = read_wav(item.path, sample_rate_hz=options.sample_rate_hz)
                samples = recordings[item.path]
                start = int(round(item.offset_ms * options.sample_rate_hz / 1000))
                if start < 0 or start + n > samples.size:
                    raise ValueError(f"snippet at {item.offset_ms} ms does not fit in {samples.size} samples")
                out[len(kept)] = samples[start:start + n]
        except (ValueError, OSError) as exc:
            skipped.append((item.path, str(exc)))
            continue
        kept.append(i)
    return out[:len(kept)], _finish(what, len(items), kept, skipped)


def load_noise_pool(paths: Sequence[Path], *, sample_rate_hz: int = 16000,
                    skip_silent: bool = True) -> tuple[list[np.ndarray], LoadReport]:
    """Read whole noise recordings (for :func:`train.augment.mix_noise`), room responses and other speech. With
    ``skip_silent``, a recording of digital silence (every sample zero) is skipped and named as unreadable ones are:
    as noise it stopped training (``noise_pool[0]: expected a noise recording, got all zeros``, naming no file), and
    as a room response it silenced every clip it reverberated."""
    pool: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[tuple[Path, str]] = []
    for i, path in enumerate(paths):
        try:
            samples = read_wav(path, sample_rate_hz=sample_rate_hz)
            if skip_silent and not np.any(samples):
                raise ValueError(f"expected sound, found digital silence (all {samples.size} samples are zero)")
            pool.append(samples)
        except (ValueError, OSError) as exc:
            skipped.append((Path(path), str(exc)))
            continue
        kept.append(i)
    return pool, _finish("noise recordings", len(paths), kept, skipped)


def _envelope(x: np.ndarray) -> np.ndarray:
    """Mean magnitude over two hops, every ``_ENVELOPE_HOP`` samples: coarse, and little changed by an offset
    that is not a whole number of hops."""
    sums = np.concatenate([[0.0], np.cumsum(np.abs(np.asarray(x, np.float64)))])
    return ((sums[2 * _ENVELOPE_HOP:] - sums[:-2 * _ENVELOPE_HOP]) / (2 * _ENVELOPE_HOP))[::_ENVELOPE_HOP]


def _sliding_sums(x: np.ndarray, length: int) -> np.ndarray:
    sums = np.concatenate([[0.0], np.cumsum(x)])
    return sums[length:] - sums[:-length]


def snippet_sources(snippets: Sequence[np.ndarray], recordings: Sequence[np.ndarray], *,
                    min_correlation: float = SNIPPET_MIN_CORRELATION) -> list[int | None]:
    """For each snippet, the index of the recording it was cut from (a stretch of it at any gain, as the
    ``_silence_`` clips of Speech Commands' test set are cut from its background-noise recordings), or None:
    the best offset of the envelopes' correlation, then the samples' correlation around it, at least
    ``min_correlation``."""
    prepared = []
    for rec in recordings:
        rec = np.asarray(rec, np.float64)
        env = _envelope(rec) if rec.size > 2 * _ENVELOPE_HOP else np.zeros(0)
        prepared.append((rec, env, np.concatenate([[0.0], np.cumsum(rec * rec)])))
    out: list[int | None] = []
    for snippet in snippets:
        x = np.asarray(snippet, np.float64)
        n, best, source = x.size, min_correlation, None
        x_norm = float(np.sqrt(x @ x))
        if x_norm == 0.0 or n <= 2 * _ENVELOPE_HOP:
            out.append(None)
            continue
        ex = _envelope(x)
        ex -= ex.mean()
        ex_norm = float(np.sqrt(ex @ ex))
        for i, (rec, env, energy) in enumerate(prepared):
            if rec.size < n or ex_norm == 0.0:
                continue
            size = 1 << int(np.ceil(np.log2(env.size + ex.size)))
            cc = np.fft.irfft(np.fft.rfft(env, size) * np.conj(np.fft.rfft(ex, size)), size)[:env.size - ex.size + 1]
            sums, squares = _sliding_sums(env, ex.size), _sliding_sums(env * env, ex.size)
            spread = np.sqrt(np.maximum(squares - sums * sums / ex.size, 1e-24))
            hop = int(np.argmax(cc / spread)) * _ENVELOPE_HOP
            first, last = max(0, hop - _ENVELOPE_HOP), min(rec.size - n, hop + _ENVELOPE_HOP)
            if first > last:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(rec[first:last + n], n)
            norms = np.sqrt(np.maximum(energy[first + n:last + n + 1] - energy[first:last + 1], 1e-24))
            score = float(np.max(windows @ x / (norms * x_norm)))
            if score >= best:
                best, source = score, i
        out.append(source)
    return out


def without_snippets_of(items: Sequence[AudioItem], recordings: Sequence[Path], *, sample_rate_hz: int = 16000,
                        label: str = SILENCE_LABEL) -> list[AudioItem]:
    """``items`` less the whole-file clips of ``label`` that are stretches of one of ``recordings``
    (:func:`snippet_sources`): a Speech Commands ``_silence_`` folder holds 1 s of its background-noise
    recordings, named by a number, so a split by name cannot keep them apart from the noise's evaluation
    pool (the trainer passes that pool). Each dropped clip is counted in a log line."""
    candidates = [i for i, item in enumerate(items) if item.label == label and item.offset_ms is None]
    if not candidates or not recordings:
        return list(items)
    pool, _ = load_noise_pool(list(recordings), sample_rate_hz=sample_rate_hz)
    # a silent clip is cut from no recording: kept, not skipped
    clips, report = load_noise_pool([items[i].path for i in candidates], sample_rate_hz=sample_rate_hz,
                                    skip_silent=False)
    sources = snippet_sources(clips, pool)
    dropped = {candidates[k] for k, source in zip(report.kept, sources) if source is not None}
    if dropped:
        logger.info("%d of %d %s clips are cut from recordings outside training (%s): left out of training",
                    len(dropped), len(candidates), label, ", ".join(sorted({str(Path(p).name) for p in recordings})))
    return [item for i, item in enumerate(items) if i not in dropped]


def _image_path(item: Any) -> Path:
    if isinstance(item, AVItem):
        return item.image_path
    if isinstance(item, ImageItem):
        return item.path
    return Path(item)


def _jpeg_cut_short(data: bytes) -> bool:
    """Whether ``data``, if a JPEG, ends before its end-of-image marker: a copy or download cut short, which the
    decoder fills with grey without an error. Segments are followed by their lengths, a scan's entropy-coded data
    to the next marker; bytes that are no marker where one belongs are left to the decoder."""
    if not data.startswith(_JPEG_SOI):
        return False
    pos, size = len(_JPEG_SOI), len(data)
    while True:
        while pos + 1 < size and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 1 >= size:
            return True
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == _JPEG_EOI:
            return False
        if marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if pos + 4 > size or end > size:
            return True
        if marker == _JPEG_SOS:
            found = _JPEG_MARKER.search(data, end)
            if found is None:
                return True
            end = found.start()
        pos = end


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG's first start-of-frame segment, or None where none is found before the scan."""
    pos, size = len(_JPEG_SOI), len(data)
    while pos + 4 <= size and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in _JPEG_SOF_MARKERS and pos + 9 <= size:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if marker == _JPEG_SOS:
            return None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a TIFF's first page (the one OpenCV decodes), or None where its first IFD says none."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        ifd = struct.unpack_from(order + "I", data, 4)[0]
        found: dict[int, int] = {}
        for k in range(struct.unpack_from(order + "H", data, ifd)[0]):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * k)
            if tag in (_TIFF_WIDTH_TAG, _TIFF_HEIGHT_TAG) and kind in (_TIFF_SHORT, _TIFF_LONG):
                found[tag] = struct.unpack_from(order + ("H" if kind == _TIFF_SHORT else "I"), value)[0]
    except struct.error:  # a header cut short: left to the decoder
        return None
    if _TIFF_WIDTH_TAG in found and _TIFF_HEIGHT_TAG in found:
        return found[_TIFF_WIDTH_TAG], found[_TIFF_HEIGHT_TAG]
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels that an encoded PNG, JPEG, BMP or TIFF's header declares, read without decoding it;
    None for other formats (WebP's header cannot declare more than :data:`MAX_IMAGE_PIXELS`) and headers it cannot
    read (left to the decoder)."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack_from(">II", data, 16)
        return width, height
    if data.startswith(_JPEG_SOI):
        return _jpeg_size(data)
    if data.startswith(b"BM") and len(data) >= 26:
        header = struct.unpack_from("<I", data, 14)[0]
        if header == 12:  # BITMAPCOREHEADER: 16-bit sizes
            width, height = struct.unpack_from("<HH", data, 18)
            return width, height
        width, height = struct.unpack_from("<ii", data, 18)
        return abs(width), abs(height)  # a negative height is a top-down bitmap
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    return None


def decode_image(path: Path, data: bytes) -> np.ndarray:
    """``data`` (the bytes of the image file ``path``) decoded to BGR uint8, upright by its EXIF orientation (as
    ``imread`` turns phone photos). ValueError for an image whose header declares more than
    :data:`MAX_IMAGE_PIXELS`, before anything is allocated for it, and for one OpenCV cannot decode."""
    size = image_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ValueError(f"{path}: expected an image of at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels "
                         f"(16384 x 16384), found {size[0]} x {size[1]} ({size[0] * size[1] / 1e6:.0f} megapixels) "
                         "in its header: decoding it would take gigabytes; shrink it first")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable image (corrupt or unsupported format)")
    return bgr


def load_images(items: Sequence[Any], size_px: tuple[int, int] = (96, 96),
                *, what: str = "images") -> tuple[np.ndarray, LoadReport]:
    """Decode images into uint8 RGB ``(N, h, w, 3)`` with the device's crop/resize
    (:func:`edgesense.frontend.image.preprocess_frame`). ``size_px`` is ``(height, width)``; items are
    :class:`ImageItem`, :class:`AVItem` or paths."""
    require(len(size_px) == 2, "size_px", "(height, width)", size_px)
    frontend = ImageFrontendOptions(height_px=int(size_px[0]), width_px=int(size_px[1]))
    out = np.zeros((len(items),) + frontend.input_shape, dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[Path, str]] = []
    for i, item in enumerate(_progress(items, len(items), f"loading {what}")):
        path = _image_path(item)
        try:
            if not path.is_file():
                raise ValueError("no such file")
            data = path.read_bytes()
            if not data:
                raise ValueError("empty file (0 bytes)")
            if _jpeg_cut_short(data):
                raise ValueError("a JPEG cut short (no end-of-image marker): the decoder would fill its missing "
                                 "part with grey")
            bgr = decode_image(path, data)
            # preprocess_frame's values are whole numbers (a uint8 resize cast to float32): lossless.
            out[len(kept)] = preprocess_frame(bgr, frontend).astype(np.uint8)
        except (ValueError, OSError, cv2.error) as exc:
            skipped.append((path, str(exc)))
            continue
        kept.append(i)
    return out[:len(kept)], _finish(what, len(items), kept, skipped)


# --------------------------------------------------------------------------- sampling


def balanced_indices(labels: Sequence[int] | np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` indices of each class present in ``labels`` (all of a smaller class),
    drawn without replacement; returned sorted, int64."""
    require(isinstance(per_class, (int, np.integer)) and per_class >= 1, "per_class", "a positive integer", per_class)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    chosen: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = min(per_class, members.size)
        if take < per_class:
            logger.info("class %s has only %d examples (< %d requested); taking all", cls, members.size, per_class)
        chosen.append(rng.choice(members, size=take, replace=False))
    if not chosen:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    """How training split the data: ``--split testing`` re-makes exactly its held-out part.
    Read from the model's metadata (``data.split``, written by the trainer); for models without
    it, these defaults: the salt is the trainer's own (``data.speaker_split_salt`` ``""``; the shipped
    ``train/configs/shared_data.yaml`` salts with ``edgesense``, and its models record it), the
    percentages are ``shared_data.yaml``'s (10 / 20 % of the speakers, 10 / 15 % of the photos; the
    trainer's own defaults are 10 % each)."""

    speaker_salt: str = ""
    validation_percent: float = 10.0
    testing_percent: float = 20.0
    image_validation_percent: float = 10.0
    image_testing_percent: float = 15.0

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], salt: str | None) -> "SplitSpec":
        """The model's recorded split; ``salt`` (the --salt option), when given, overrides its salt."""
        recorded = dict((metadata.get("data") or {}).get("split") or {})
        known = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in recorded.items() if k in known})
        return dataclasses.replace(spec, speaker_salt=salt) if salt else spec

    def split_clips(self, index: Any) -> dict[str, list[Any]]:
        """``index``'s clips (a :class:`edgesense.train.data.SpeechCommandsIndex`) split by speaker
        as training split them."""
        return index.split(validation_percent=self.validation_percent, testing_percent=self.testing_percent,
                           salt=self.speaker_salt)

    def split_photos(self, index: Any) -> dict[str, list[Any]]:
        """``index``'s photos (a :class:`edgesense.train.data.ImageIndex`) split by file-name hash
        as training split them."""
        return index.split(validation_percent=self.image_validation_percent,
                           testing_percent=self.image_testing_percent)


def check_init_split(run_dir: Path, config: Any, *, flag: str = "init_from") -> None:
    """ValueError naming ``flag`` when run ``run_dir`` trained on clips or photos that ``config`` (a
    :class:`edgesense.train.config.DataConfig`) holds out: a run of the same folders split another way (another
    ``data.speaker_split_salt`` or other percentages) starts from weights that learned this run's validation and
    test speakers or photos, so the checkpoint it picks and the test figure it writes down would score what the
    weights already knew. The split is the one ``run_dir``'s run.json records; a run that records none (a
    warning), or trained on other folders, is not compared."""
    try:
        recorded = json.loads((Path(run_dir) / "run.json").read_text())["data"]
        if not isinstance(recorded.get("split"), dict):
            raise KeyError("split")
        spec = SplitSpec.from_metadata({"data": recorded}, None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        logger.warning("%s %s: its run.json records no data split: whether it trained on the speakers or photos this "
                       "run holds out is not checked", flag, run_dir)
        return
    earlier_speech = {Path(p).resolve() for p in recorded.get("speech_commands") or ()}
    for root in config.speech_commands:
        if Path(root).resolve() not in earlier_speech:
            continue
        index = load_speech_commands(root, words=config.words)
        trained = {(it.path, it.offset_ms) for it in spec.split_clips(index)["training"]}
        now = index.split(validation_percent=config.validation_percent, testing_percent=config.testing_percent,
                          salt=config.speaker_split_salt)
        _refuse_learned(flag, run_dir, root, "clips", trained,
                        [(it.path, it.offset_ms) for name in ("validation", "testing") for it in now[name]],
                        f"speaker salt {spec.speaker_salt!r}, validation {spec.validation_percent:g} %, testing "
                        f"{spec.testing_percent:g} %",
                        f"data.speaker_split_salt {config.speaker_split_salt!r}, data.validation_percent "
                        f"{config.validation_percent:g}, data.testing_percent {config.testing_percent:g}")
    earlier_scenes = recorded.get("scenes")
    if config.scenes is not None and earlier_scenes and Path(earlier_scenes).resolve() == Path(config.scenes).resolve():
        index = load_image_folder(config.scenes)
        trained = {it.path for it in spec.split_photos(index)["training"]}
        now = split_image_items(index.items, validation_percent=config.image_validation_percent,
                                testing_percent=config.image_testing_percent)
        _refuse_learned(flag, run_dir, config.scenes, "photos", trained,
                        [it.path for name in ("validation", "testing") for it in now[name]],
                        f"validation {spec.image_validation_percent:g} %, testing {spec.image_testing_percent:g} %",
                        f"data.image_validation_percent {config.image_validation_percent:g}, "
                        f"data.image_testing_percent {config.image_testing_percent:g}")


def _refuse_learned(flag: str, run_dir: Path, root: Path, what: str, trained: set, held_out: list, earlier: str,
                    now: str) -> None:
    learned = sum(key in trained for key in held_out)
    if learned:
        raise ValueError(f"{flag}: expected a run that never trained on what this run holds out, got {run_dir}, "
                         f"which trained on {learned} of its {len(held_out)} validation and test {what} of {root} "
                         f"(it split them with {earlier}; this config: {now}); its validation and test figures "
                         "would score what the starting weights learned: start from a run of this split, or split "
                         "as that run did")
