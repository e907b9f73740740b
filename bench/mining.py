"""``edgesense mine``: hard negatives, the moments of talk where a model fires (or nearly fires).

A model learns to stay quiet on talk from windows of talk labelled ``_unknown_``, but most windows
of talk are easy: the few that sound like a command word are the ones that fire on a device. This
command streams the **training pool** of other people's speech (``--negatives``, split by
recording with :func:`edgesense.train.pools.speech_negative_pools`) over the training pool of
noise and music (``--noise``), as the benchmark's talk streams do, through the deployed model at the
device's hop, and keeps the 1 s window the model saw at each peak where a command word's posterior
reaches ``threshold``: one per peak, peaks at least ``min_gap_ms`` apart, strongest first.

It writes ``OUT/WORD/STREAM_TIMEms.wav`` (WORD: the command the window scored as) and
``OUT/mined.json`` (the model, the recordings streamed, the counts). Name ``OUT`` in a training
config's ``data.hard_negatives`` and train again (``edgesense train --init-from RUN`` to fine-tune):
every window becomes an ``_unknown_`` row like the windows of other speech. ``--force`` mines again into
the ``OUT`` of an earlier mine: its windows not found again are deleted (training reads every window in the
folder), and a folder that holds a file no mine wrote (its ``mined.json`` does not list it) is refused.
Ctrl-C while it writes leaves the earlier windows as they were (the new ones are written whole into a
hidden folder first) and the same command with ``--force`` completes the run.
The tuning and evaluation pools are never streamed, so the benchmark's operating point and figures stay honest.

With ``--speech-commands DIR`` the other words of the model's **training speakers** (the
``_unknown_`` clips of DIR's training split, re-made from the split the model records) are said
alone and in the talk too: on unseen speakers most false accepts are other short words (digits
above all) that sound like a command, and other-speech recordings hold few of them. The
validation and test speakers' clips are never streamed.

Runs without TensorFlow (the ``[bench]`` extra): the model is the deployed ``.tflite`` on the
LiteRT interpreter, so the windows are where the device itself fires.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

import numpy as np

from edgesense.app.cli import input_file, path_argument, refuse_files_in, user_names, write_atomic
from edgesense.bench.streaming import (
    SEGMENT_S,
    clip_utterances,
    other_speech_utterances,
    read_recordings,
)
from edgesense.bench.streams import (
    MAX_STREAM_S,
    MIN_STREAM_S,
    Stream,
    StreamOptions,
    StreamPosteriors,
    Utterance,
    build_segments,
    build_stream,
    stream_posteriors,
)
from edgesense.frontend.wav import write_wav
from edgesense.loop.scheduler import SchedulerOptions
from edgesense.runtime.interpreter import MAX_THREADS, InterpreterOptions
from edgesense.runtime.model import EdgeModel
from edgesense.runtime.second_opinion import SecondOpinion, SecondOpinionOptions
from edgesense.schema.validate import is_int, is_number, require
from edgesense.train.cache import file_sha256
from edgesense.train.config import INT_LIMIT, SEED_EXPECTED, derived_seed, is_seed
from edgesense.train.pools import (
    is_recording,
    say_held_out,
    speech_negative_pools,
    split_recordings,
    wav_recordings,
)
from edgesense.types import UNKNOWN_LABEL, is_command_word

__all__ = ["MANIFEST_NAME", "MineOptions", "MinedWindow", "MineReport", "check_window_words", "earlier_files", "mine",
           "peaks", "training_other_words", "word_folder_problem", "write_mined", "add_arguments", "run"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "mined.json"
#: What a run writes and replaces, while it writes (hidden: training reads only ``WORD/*.wav``).
PENDING_NAME = ".mined.pending.json"
#: Where a run writes its windows whole before they move into place (hidden: training never reads it).
STAGING_NAME = ".mining"
_MS_PER_S = 1000.0
_S_PER_MINUTE = 60.0


@dataclass(frozen=True, kw_only=True)
class MineOptions:
    """How much talk to stream and which windows to keep."""

    #: Length of the talk stream (training pool of other speech over the training pool of noise).
    talk_minutes: float = 120.0
    #: Each other word of the training pool is also said alone this many times (the words stream).
    word_passes: int = 2
    #: A window is kept where a command word's posterior reaches this (below the firmware's
    #: threshold, so near misses teach too).
    threshold: float = 0.5
    #: Two kept windows of one stream are at least this far apart (one per peak).
    min_gap_ms: float = 1000.0
    #: At most this many windows, the strongest first (None: all).
    max_windows: int | None = 3000
    hop_ms: float = SchedulerOptions.command_hop_ms
    threads: int = 1
    seed: int = 0
    #: Mine where the model *and its second opinion* fire (the blend the device runs), to teach the heads.
    second_opinion: SecondOpinionOptions = SecondOpinionOptions()

    def __post_init__(self) -> None:
        # up to the longest stream StreamOptions builds (a week): past it mine was refused once the model was
        # loaded, naming a duration_s
        require(is_number(self.talk_minutes) and (self.talk_minutes == 0 or MIN_STREAM_S <= self.talk_minutes
                                                  * _S_PER_MINUTE <= MAX_STREAM_S), "talk_minutes",
                f"0 or a number of minutes in [{MIN_STREAM_S / _S_PER_MINUTE:.2f}, {MAX_STREAM_S / _S_PER_MINUTE:g}]",
                self.talk_minutes)
        require(is_int(self.word_passes) and 0 <= self.word_passes < INT_LIMIT, "word_passes",
                "an integer in [0, 2**63)", self.word_passes)
        require(self.talk_minutes > 0 or self.word_passes > 0, "talk_minutes", "> 0 unless word_passes > 0",
                self.talk_minutes)
        require(is_number(self.threshold) and 0.0 < self.threshold < 1.0, "threshold", "a number in (0, 1)",
                self.threshold)
        require(is_number(self.min_gap_ms) and self.min_gap_ms >= 0, "min_gap_ms", "a number >= 0",
                self.min_gap_ms)
        require(self.max_windows is None or (is_int(self.max_windows) and 1 <= self.max_windows < INT_LIMIT),
                "max_windows", "an integer in [1, 2**63) or None", self.max_windows)
        require(is_number(self.hop_ms) and self.hop_ms > 0, "hop_ms", "a positive number", self.hop_ms)
        # the interpreter's own bound, said here so that the line names --threads, not num_threads
        require(is_int(self.threads) and 1 <= self.threads <= MAX_THREADS, "threads",
                f"an integer in [1, {MAX_THREADS}]", self.threads)
        require(is_seed(self.seed), "seed", SEED_EXPECTED, self.seed)
        require(isinstance(self.second_opinion, SecondOpinionOptions), "second_opinion", "SecondOpinionOptions",
                self.second_opinion)


@dataclass(frozen=True)
class MinedWindow:
    """One window the model scored as ``word`` with posterior ``score``; ``end_ms``: where the
    window ends in ``stream`` (the hop the model ran at)."""

    samples: np.ndarray
    word: str
    score: float
    stream: str
    end_ms: float

    @property
    def file_name(self) -> str:
        return f"{self.word}/{self.stream}_{int(round(self.end_ms)):08d}ms.wav"


@dataclass(frozen=True, kw_only=True)
class MineReport:
    """What :func:`mine` streamed and found."""

    windows: tuple[MinedWindow, ...]
    talk_s: float
    words_said: int
    candidates: int
    negatives: tuple[str, ...]
    noise: tuple[str, ...]
    elapsed_s: float
    #: Sources of the training speakers' other words streamed (``--speech-commands``).
    speaker_words: tuple[str, ...] = ()

    @property
    def per_word(self) -> dict[str, int]:
        return dict(sorted(Counter(w.word for w in self.windows).items()))

    def summary(self) -> str:
        hours = self.talk_s / 3600.0
        words = ", ".join(f"{word} {n}" for word, n in self.per_word.items()) or "none"
        speakers = (f" (with the {len(self.speaker_words)} other words of training speakers)" if self.speaker_words
                    else "")
        return (f"mined {len(self.windows)} windows ({self.candidates} peaks at or above the threshold) from "
                f"{hours:.2f} h of talk and {self.words_said} other words said alone{speakers}, "
                f"in {self.elapsed_s:.0f} s; by the word they scored as: {words}")


def peaks(posteriors: np.ndarray, times_ms: np.ndarray, columns: Sequence[int], *, threshold: float,
          min_gap_ms: float) -> list[tuple[int, int, float]]:
    """``(hop, column, score)`` of each kept peak: hops where the highest posterior among
    ``columns`` reaches ``threshold``, taken strongest first, each suppressing every other hop
    within ``min_gap_ms`` of it; sorted by hop. Pure (no model)."""
    posteriors = np.asarray(posteriors, dtype=np.float32)
    times_ms = np.asarray(times_ms, dtype=np.float64)
    require(posteriors.ndim == 2 and posteriors.shape[0] == times_ms.size, "posteriors",
            f"shape (hops, classes) with {times_ms.size} hops", posteriors.shape)
    cols = np.asarray(columns, dtype=np.int64)
    if not cols.size or not times_ms.size:
        return []
    scores = posteriors[:, cols]
    best = scores.argmax(axis=1)
    top = scores[np.arange(scores.shape[0]), best]
    kept: list[tuple[int, int, float]] = []
    free = np.ones(top.size, bool)
    for hop in np.argsort(-top, kind="stable"):
        if top[hop] < threshold:
            break
        if not free[hop]:
            continue
        kept.append((int(hop), int(cols[best[hop]]), float(top[hop])))
        free[np.abs(times_ms - times_ms[hop]) < min_gap_ms] = False
    return sorted(kept)


def _windows_of(stream_name: str, samples: np.ndarray, post: StreamPosteriors, *, sample_rate_hz: int,
                clip_samples: int, options: MineOptions) -> list[MinedWindow]:
    """The window of ``samples`` that ends at each of :func:`peaks`' hops (zero-padded at the start)."""
    labels = post.labels
    columns = [i for i, label in enumerate(labels) if is_command_word(label)]
    out = []
    for hop, column, score in peaks(post.posteriors, post.times_ms, columns, threshold=options.threshold,
                                    min_gap_ms=options.min_gap_ms):
        end = int(round(post.times_ms[hop] * sample_rate_hz / _MS_PER_S))
        start = max(0, end - clip_samples)
        window = np.zeros(clip_samples, np.float32)
        window[clip_samples - (end - start):] = samples[start:end]
        out.append(MinedWindow(samples=window, word=labels[column], score=score, stream=stream_name,
                               end_ms=float(post.times_ms[hop])))
    return out


def training_other_words(model: EdgeModel, speech_commands: Path, *, salt: str | None = None) -> list[Utterance]:
    """The ``_unknown_`` clips of the training speakers of ``speech_commands``, split as the model
    records (:class:`edgesense.train.data.SplitSpec`; ``salt`` stands in for a salt the model does not record:
    another salt than the one it records is a ValueError naming ``salt``), as utterances."""
    from edgesense.train import data  # the dataset reader (numpy, OpenCV), only when asked for

    recorded = ((model.metadata.get("data") or {}).get("split") or {}).get("speaker_salt")
    # another salt names other speakers "training": among them the speakers the model is validated and tested on,
    # whose words would train as hard negatives
    require(not salt or recorded is None or salt == recorded, "salt",
            f"the speaker-split salt the model records ({recorded!r}) or none (the model's training speakers are "
            "the only ones mined)", salt)
    index = data.load_speech_commands(speech_commands,
                                      words=tuple(w for w in model.command_labels if is_command_word(w)))
    training = data.SplitSpec.from_metadata(model.metadata, salt).split_clips(index)["training"]
    items = [it for it in training if it.label == UNKNOWN_LABEL]
    if not items:
        return []
    clips, report = data.load_clips(items, model.audio_frontend, what="training speakers' other words")
    return clip_utterances(clips, [items[i] for i in report.kept], model.audio_frontend.sample_rate_hz)


def mine(model: EdgeModel, options: MineOptions = MineOptions(), *, negatives: Sequence[Path] = (),
         noise: Sequence[Path] = (), other_words: Sequence[Utterance] = ()) -> MineReport:
    """Stream the training pools of ``negatives`` (other speech) and ``other_words`` (e.g.
    :func:`training_other_words`) over the training pool of ``noise`` through ``model`` and keep
    the windows where it scores a command word (see the module docstring)."""
    started = time.perf_counter()
    sr = model.audio_frontend.sample_rate_hz
    clip_samples = model.audio_frontend.clip_samples
    speech_pools = speech_negative_pools(wav_recordings(negatives))
    say_held_out(FLAGS["negatives"], negatives, speech_pools)  # a file named alone keeps its folder's pool
    speech_paths = speech_pools["training"]
    if not speech_paths and not other_words:
        raise ValueError(f"negatives: other speech (.wav recordings) whose training pool is not empty, "
                         f"got none under {', '.join(str(p) for p in negatives) or 'no folder'}")
    noise_pools = split_recordings(wav_recordings(noise))
    say_held_out(FLAGS["noise"], noise, noise_pools)
    noise_paths = noise_pools["training"]
    if noise and not noise_paths:  # not mined over no background at all, as if it were asked for
        raise ValueError(f"noise: noise (.wav recordings) whose training pool is not empty (the evaluation pool is "
                         f"the benchmark's), got none under {', '.join(str(p) for p in noise)}")
    background = [x for _, x in read_recordings(noise_paths, sr)]
    words, sentences = other_speech_utterances(speech_paths, sr)
    words += list(other_words)
    base = StreamOptions(sample_rate_hz=sr, seed=options.seed)
    streams: list[tuple[str, Stream]] = []
    if options.talk_minutes > 0:
        pieces = build_segments(dataclasses.replace(base, kind="talk", duration_s=options.talk_minutes * _S_PER_MINUTE),
                                SEGMENT_S, others=words + sentences, noise=background)
        streams += [(f"talk{k:02d}", piece) for k, piece in enumerate(pieces)]
    if options.word_passes > 0 and words:
        streams.append(("words", build_stream(dataclasses.replace(base, kind="words", passes=options.word_passes,
                                                                  seed=derived_seed(options.seed, 1)),
                                              others=words, noise=background)))
    found: list[MinedWindow] = []
    words_said = 0
    talk_ms = 0.0
    logger.info("mining: streaming %.1f min through the model in %d pieces (a line as each one ends) ...",
                sum(stream.duration_ms for _, stream in streams) / (_MS_PER_S * _S_PER_MINUTE), len(streams))
    for k, (name, stream) in enumerate(streams):
        samples = stream.render()
        post = stream_posteriors(model, samples, hop_ms=options.hop_ms, second_opinion=options.second_opinion)
        found += _windows_of(name, samples, post, sample_rate_hz=sr, clip_samples=clip_samples, options=options)
        if stream.options.kind == "words":
            words_said = len(stream.words)
        else:
            talk_ms += stream.duration_ms
        logger.info("%s: %.1f min streamed, %d windows so far (%d of %d pieces, %.0f s)", name,
                    stream.duration_ms / (_MS_PER_S * _S_PER_MINUTE), len(found), k + 1, len(streams),
                    time.perf_counter() - started)
    candidates = len(found)
    found.sort(key=lambda w: -w.score)
    if options.max_windows is not None:
        found = found[:options.max_windows]
    return MineReport(windows=tuple(found), talk_s=talk_ms / _MS_PER_S, words_said=words_said,
                      candidates=candidates, negatives=tuple(str(p) for p in speech_paths),
                      speaker_words=tuple(u.source for u in other_words),
                      noise=tuple(str(p) for p in noise_paths), elapsed_s=time.perf_counter() - started)


def word_folder_problem(word: str) -> str | None:
    """Why the command word ``word`` (a model's label, from its metadata) cannot name the folder ``OUT/WORD`` that
    :func:`write_mined` writes its windows into (None: it can): a ``/``, a ``\\``, a drive, ``.``, ``..`` or an
    absolute path led outside ``OUT`` (``../../x`` wrote the windows two folders up, ``/x`` anywhere), and a hidden
    name (a leading ``.``) is never read by training and may be mine's own staging folder."""
    if not isinstance(word, str) or not word:
        return "it is empty"
    if "\0" in word:
        return "it holds a NUL character"
    if word in (".", ".."):
        return f"{word!r} is no folder name"
    if PurePosixPath(word).name != word or PureWindowsPath(word).name != word:
        return "it is a path, not a folder name (a '/', a '\\' or a drive)"
    if word.startswith("."):
        return "it starts with '.' (a hidden folder, which training skips)"
    return None


def check_window_words(words: Sequence[str], where: str) -> None:
    """A ValueError starting with ``where`` naming the first of ``words`` (a model's command words) that cannot name a
    folder inside ``OUT`` (:func:`word_folder_problem`): a model shared by someone else names its words itself."""
    for word in words:
        problem = word_folder_problem(word) if is_command_word(word) else None
        if problem is not None:
            raise ValueError(f"{where}: expected command words that name a folder inside --out (mine writes each "
                             f"window as OUT/WORD/NAME.wav), got {word!r}: {problem}")


def _window_names(entries: Any) -> set[str]:
    """The window names (``WORD/NAME.wav`` inside the folder) among a manifest's ``entries`` (``{"file": ...}``
    objects or names): a listed path that leaves the folder is nothing mine wrote."""
    names = {PurePosixPath(entry["file"] if isinstance(entry, dict) else entry) for entry in entries}
    return {n.as_posix() for n in names if len(n.parts) == 2 and ".." not in n.parts and n.suffix == ".wav"}


def earlier_files(out_dir: str | Path, *, force: bool = False) -> set[str]:
    """The files (paths relative to ``out_dir``, ``/``-separated) an earlier :func:`write_mined` left in
    ``out_dir``: its :data:`MANIFEST_NAME` and the windows that lists, and what a run stopped while it wrote
    (Ctrl-C) left: its :data:`PENDING_NAME`, the windows that lists (new and replaced) and its
    :data:`STAGING_NAME` folder; empty for a new or empty folder. A file manager's files (:data:`_DESKTOP_FILES`:
    Finder's ``.DS_Store`` once the folder was opened to listen to the windows) are left out: kept, and not refused.
    A ValueError naming ``--out`` when ``out_dir`` is a file, or holds files and ``force`` is not set, or
    holds a file no earlier mine wrote (a user's own, never deleted): ``--force`` replaces mine's own
    windows only."""
    out = Path(out_dir)
    refuse_files_in("--out", out, force=force)
    if not out.is_dir():
        return set()
    _refuse_links(out)
    present = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir() and not _desktop_file(p))
    if not present:
        return set()
    manifest, pending = out / MANIFEST_NAME, out / PENDING_NAME
    owned = {MANIFEST_NAME, PENDING_NAME}
    for path in (manifest, pending):
        try:
            record = json.loads(path.read_text()) if path.is_file() else {}
            owned |= _window_names(record.get("files", [])) | _window_names(record.get("replaces", []))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"--out: expected a folder an earlier edgesense mine wrote, got {out}, whose "
                             f"{path.name} is not one it wrote ({exc}); --force replaces only mine's own windows, "
                             "choose another --out") from None
    foreign = [name for name in present if name not in owned and PurePosixPath(name).parts[0] != STAGING_NAME
               and not _a_manifest_being_written(name)]
    if foreign or not (manifest.is_file() or pending.is_file()):
        others = foreign or present
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise ValueError(f"--out: expected a folder that only earlier edgesense mine runs wrote into (the files its "
                         f"{MANIFEST_NAME} lists), got {out}, which also holds {others[0]}{more}, not written by mine; "
                         "--force replaces only mine's own windows and never deletes other files: move them out or "
                         "choose another --out")
    return set(present)


def _refuse_links(out: Path) -> None:
    """A ValueError naming ``--out`` and the first symbolic link inside ``out`` (a shared folder unpacked from an
    archive keeps its links): a ``WORD`` folder or the hidden staging folder that is a link made a run write its
    windows into the folder it points at, outside ``--out`` (over a file of a window's name there). Mine writes no
    link; ``out`` itself may be one (a folder on another disk)."""
    link = next((p for p in sorted(out.rglob("*")) if p.is_symlink()), None)
    if link is not None:
        raise ValueError(f"--out: expected a folder that only earlier edgesense mine runs wrote into, got {out}, which "
                         f"holds {link.relative_to(out).as_posix()}, a symbolic link (to {os.readlink(link)}): mine "
                         "writes only inside --out, never through a link; remove the link or choose another --out")


#: What a desktop's file manager leaves in a folder it shows (macOS Finder's ``.DS_Store``, the ``._NAME`` AppleDouble
#: files it writes beside each file on a USB drive or share, Windows Explorer's ``Thumbs.db`` and ``desktop.ini``):
#: no window (training reads no hidden file), not the user's own, and never deleted.
_DESKTOP_FILES = (".DS_Store", "._*", "Thumbs.db", "desktop.ini")


def _desktop_file(path: Path) -> bool:
    """Whether ``path`` is a file a file manager left (:data:`_DESKTOP_FILES`): neither mine's nor the user's."""
    return any(fnmatch.fnmatchcase(path.name.lower(), pattern.lower()) for pattern in _DESKTOP_FILES)


def _a_manifest_being_written(name: str) -> bool:
    """Whether ``name`` is the hidden file of a manifest's write (:func:`write_atomic`) that a run stopped at once
    (killed, a power cut) left behind."""
    return any(fnmatch.fnmatchcase(name, f".{manifest}-*.tmp") for manifest in (MANIFEST_NAME, PENDING_NAME))


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """``record`` as ``path``, whole or not at all (written beside it, then renamed)."""
    write_atomic(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"), what="the record")


def write_mined(out_dir: str | Path, report: MineReport, *, model_path: str | Path, options: MineOptions,
                sample_rate_hz: int, force: bool = False) -> Path:
    """Write the windows and :data:`MANIFEST_NAME` into ``out_dir``; a folder that already holds
    files is a ValueError unless ``force``, which replaces what an earlier mine wrote there (its windows
    that this report does not hold are deleted: the folder holds exactly these windows; see
    :func:`earlier_files`). Returns the manifest's path.

    Stopped midway (Ctrl-C), it leaves the earlier run's windows and manifest as they were and no
    half-written window where training reads (the windows are written whole into the hidden
    :data:`STAGING_NAME` folder, and moved into place once the manifest lists them), and nothing that
    the same command with ``--force`` refuses (:data:`PENDING_NAME` lists what this run writes and replaces)."""
    out = Path(out_dir)
    check_window_words(sorted({w.word for w in report.windows}), "windows")
    earlier = earlier_files(out, force=force)
    model_bytes = Path(model_path).read_bytes()
    manifest: dict[str, Any] = {
        "model": {"path": str(model_path), "sha256": hashlib.sha256(model_bytes).hexdigest()},
        **({"second_opinion_sha256": file_sha256(options.second_opinion.heads_path)}
           if options.second_opinion.enabled else {}),
        "options": dataclasses.asdict(options),
        "pool": "training",
        "talk_s": round(report.talk_s, 1),
        "words_said": report.words_said,
        "candidates": report.candidates,
        "windows": len(report.windows),
        "per_word": report.per_word,
        "negatives": list(report.negatives),
        "speaker_words": list(report.speaker_words),
        "noise": list(report.noise),
        "files": [{"file": w.file_name, "word": w.word, "score": round(w.score, 4)} for w in report.windows],
    }
    staging, pending = out / STAGING_NAME, out / PENDING_NAME
    out.mkdir(parents=True, exist_ok=True)
    # What this run writes and what it replaces, before it touches either (a stopped run's own, kept).
    _write_json(pending, {**manifest, "replaces": sorted(_window_names(earlier))})
    shutil.rmtree(staging, ignore_errors=True)  # a stopped run's windows
    for window in report.windows:
        path = staging / window.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, window.samples, sample_rate_hz)
    path = out / MANIFEST_NAME
    _write_json(path, manifest)
    for window in report.windows:
        (out / window.file_name).parent.mkdir(parents=True, exist_ok=True)
        (staging / window.file_name).replace(out / window.file_name)
    # The earlier run's windows this run did not find again: a training run reads every window in the folder.
    new = {w.file_name for w in report.windows}
    for name in sorted(earlier - new):
        stale = out / name
        if PurePosixPath(name).parts[0] == STAGING_NAME or stale in (path, pending):
            continue
        stale.unlink(missing_ok=True)
        if stale.parent != out and stale.parent.is_dir() and not any(stale.parent.iterdir()):
            stale.parent.rmdir()
    shutil.rmtree(staging, ignore_errors=True)
    pending.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- CLI


#: Option fields as the flags a user types (messages name the flag, not the field).
FLAGS = {"talk_minutes": "--talk-minutes", "word_passes": "--word-passes", "threshold": "--threshold",
         "min_gap_ms": "--min-gap-ms", "max_windows": "--max-windows", "threads": "--threads", "seed": "--seed",
         "negatives": "--negatives", "noise": "--noise", "speech_commands": "--speech-commands", "salt": "--salt",
         "heads_path": "--second-opinion",
         "student_weight": "--student-weight", "second_opinion.heads_path": "--second-opinion",
         "second_opinion": "--second-opinion"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = MineOptions()
    parser.add_argument("--model", required=True, type=path_argument, help="the deployed .tflite to mine with")
    parser.add_argument("--negatives", type=path_argument, action="append", default=[],
                        help="other speech, .wav file or folder (repeatable; e.g. ../shared/data/speech_negatives): "
                             "its training pool is streamed")
    parser.add_argument("--speech-commands", type=path_argument, default=None,
                        help="a Speech Commands folder: the _unknown_ words of the model's training speakers "
                             "(its recorded split) are streamed too")
    parser.add_argument("--salt", default=None,
                        help="speaker-split salt of --speech-commands, for a model that records none (default: the "
                             "one the model records; another is refused)")
    parser.add_argument("--noise", type=path_argument, action="append", default=[],
                        help="noise and music, .wav file or folder (repeatable): its training pool is the background")
    parser.add_argument("--out", required=True, type=path_argument,
                        help="output folder (name it in data.hard_negatives)")
    parser.add_argument("--talk-minutes", type=float, default=defaults.talk_minutes,
                        help="minutes of talk to stream (default %(default)s)")
    parser.add_argument("--word-passes", type=int, default=defaults.word_passes,
                        help="times each other word is also said alone: the short recordings of --negatives and the "
                             "_unknown_ clips of --speech-commands (0: none; default %(default)s)")
    parser.add_argument("--threshold", type=float, default=defaults.threshold,
                        help="keep a window where a command word's posterior reaches this (default %(default)s)")
    parser.add_argument("--min-gap-ms", type=float, default=defaults.min_gap_ms,
                        help="kept windows at least this far apart (default %(default)s)")
    parser.add_argument("--max-windows", type=int, default=defaults.max_windows,
                        help="keep at most this many, strongest first (default %(default)s)")
    parser.add_argument("--second-opinion", type=path_argument, default=None, metavar="HEADS",
                        help="mine where the model blended with these stream heads fires "
                             "(edgesense train-stream-heads)")
    parser.add_argument("--student-weight", type=float, default=None,
                        help=f"the model's share of that blend (default {defaults.second_opinion.student_weight})")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="interpreter threads (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="random seed of the streams (default %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="replace what an earlier mine wrote into --out (its windows not found again are deleted; "
                             "a folder holding other files is refused)")


def run(args: argparse.Namespace) -> int:
    with user_names(FLAGS):
        heads = input_file("--second-opinion", args.second_opinion)
        if heads is None and args.student_weight is not None:
            raise ValueError("--student-weight: acts only with --second-opinion, which is not given")
        if args.speech_commands is None and args.salt is not None:
            raise ValueError("--salt: acts only with --speech-commands, which is not given")
        weight = {} if args.student_weight is None else {"student_weight": args.student_weight}
        second = SecondOpinionOptions(heads_path=None if heads is None else str(heads), **weight)
        options = MineOptions(talk_minutes=args.talk_minutes, word_passes=args.word_passes, threshold=args.threshold,
                              min_gap_ms=args.min_gap_ms, max_windows=args.max_windows, threads=args.threads,
                              seed=args.seed, second_opinion=second)
        model_path = input_file("--model", args.model)
        if not args.negatives and args.speech_commands is None:
            raise ValueError("--negatives/--speech-commands: expected other speech to stream (one or both), got "
                             "neither")
        extra = [] if args.speech_commands is None else [args.speech_commands]
        for flag, paths in (("--negatives", args.negatives), ("--noise", args.noise), ("--speech-commands", extra)):
            for p in paths:
                if not p.exists():
                    raise ValueError(f"{flag} {p}: no such file or folder")
                if flag == "--speech-commands" and not p.is_dir():
                    raise ValueError(f"{flag} {p}: expected a Speech Commands folder, got a file")
                if flag != "--speech-commands" and not p.is_dir() and not is_recording(p):
                    raise ValueError(f"{flag} {p}: expected a folder of .wav recordings or a .wav file, got another "
                                     f"file")
        out = Path(args.out)
        earlier_files(out, force=args.force)  # before the streaming, not after it
        model = EdgeModel.load(model_path, options=InterpreterOptions(num_threads=options.threads))
        check_window_words(model.command_labels, f"--model {model_path}: metadata labels.command")
        if second.enabled:  # heads of other words, a damaged file, no speech_embedding: said before the streaming
            SecondOpinion(second, labels=model.command_labels, sample_rate_hz=model.audio_frontend.sample_rate_hz,
                          hop_ms=options.hop_ms)
        other_words = ([] if args.speech_commands is None
                       else training_other_words(model, args.speech_commands, salt=args.salt))
        if args.speech_commands is not None and not other_words:
            raise ValueError(f"--speech-commands {args.speech_commands}: _unknown_ clips of training speakers, "
                             f"found none")
        report = mine(model, options, negatives=args.negatives, noise=args.noise, other_words=other_words)
    write_mined(out, report, model_path=model_path, options=options,
                sample_rate_hz=model.audio_frontend.sample_rate_hz, force=args.force)
    print(report.summary())
    if report.windows:
        print(f"wrote {out}/WORD/*.wav and {out / MANIFEST_NAME}: name {out} in a training config's "
              "data.hard_negatives")
    else:
        print(f"wrote only {out / MANIFEST_NAME}: the model never reached --threshold {options.threshold:g} on this "
              f"talk, so there is no window to train on (a lower --threshold or more --talk-minutes finds some)")
    return 0
