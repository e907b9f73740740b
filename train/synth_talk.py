"""``edgesense synth-talk``: continuous talk that holds no command word, read by every synthetic voice.

A stream model hears people talk near it far more often than it hears a command; it learns to
stay quiet on talk only from talk labelled ``_unknown_``. This module writes sentences drawn
from a small grammar whose vocabulary (:data:`VOCABULARY`) holds none of the command words,
none of their homophones ("know", "write") and no word that begins or ends with one ("going",
"yesterday", "ago", "cup"; for a model of other words, ``--words``, its entries that say one are left
out: :func:`vocabulary_without`), spoken by the voices of :mod:`edgesense.train.synth` (espeak-ng's
voices and variants, piper's neural voices) at drawn speeds and pitches.

Output: ``DIR/SPEAKER/SPEAKER_N.wav`` (16 kHz mono 16-bit, one sentence each, peak-normalised)
and ``DIR/transcripts.txt`` (``SPEAKER/SPEAKER_N.wav<TAB>sentence``). Name ``DIR`` in a training
config's ``data.speech_negatives``: the trainer cuts it into 1 s windows of ``_unknown_`` and
splits it by recording like real talk. Never give it to ``edgesense bench --negatives``: the
benchmark measures false accepts on real people's talk.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgesense.app.cli import path_argument, refuse_files_in
from edgesense.schema.validate import is_int, require
from edgesense.train import synth
from edgesense.train.config import INT_LIMIT, SEED_EXPECTED, is_seed
from edgesense.types import DEFAULT_COMMAND_WORDS

__all__ = ["PATTERN_WORDS", "TRANSCRIPTS_NAME", "VOCABULARY", "TalkOptions", "TalkReport", "add_arguments",
           "clashes", "draw_sentences", "run", "synthesize_talk", "vocabulary_without"]

logger = logging.getLogger(__name__)

#: One line per sentence of the folder: ``SPEAKER/SPEAKER_N.wav<TAB>sentence``.
TRANSCRIPTS_NAME = "transcripts.txt"

#: The grammar's words by part of speech. :func:`clashes` checks them against the command words.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "name": ("anna", "peter", "maria", "thomas", "lucy", "samuel", "helen", "david", "clara", "james", "emma",
             "robert", "sophie", "daniel", "julia", "michael", "laura", "william", "kate", "martin"),
    "noun": ("house", "garden", "kitchen", "window", "table", "chair", "river", "mountain", "forest", "city",
             "village", "market", "bridge", "library", "teacher", "doctor", "farmer", "painter", "neighbour",
             "brother", "sister", "mother", "father", "child", "family", "friend", "letter", "paper", "pencil",
             "basket", "bottle", "coffee", "bread", "butter", "cheese", "apple", "banana", "flower", "tree",
             "bird", "cat", "dog", "horse", "rabbit", "fish", "boat", "car", "bicycle", "train", "plane",
             "ticket", "picture", "book", "song", "music", "weather", "winter", "summer", "holiday",
             "meeting", "school", "hospital", "museum", "church", "castle", "island", "beach", "ocean", "lake",
             "field", "road", "street", "corner", "shop", "bakery", "restaurant", "hotel", "airport",
             "computer", "camera", "telephone", "radio", "blanket", "pillow", "carpet", "curtain", "mirror",
             "candle", "lamp", "clock", "jacket", "shirt", "hat", "umbrella", "wallet", "key", "box", "bag",
             "plate", "spoon", "knife", "fork", "glass", "jar", "bucket", "ladder", "hammer", "rope", "wheel",
             "engine", "machine", "sandwich", "kettle", "newspaper", "magazine", "parcel", "garage", "cellar",
             "balcony", "chimney", "fence", "gate", "path", "hill", "valley", "desert", "harbour", "tower"),
    "adjective": ("old", "new", "small", "large", "red", "blue", "green", "yellow", "white", "black", "quiet",
                  "busy", "warm", "cold", "heavy", "light", "dark", "clean", "dirty", "friendly",
                  "careful", "happy", "tired", "hungry", "strange", "beautiful", "wooden", "broken", "empty",
                  "full", "famous", "simple", "useful", "little", "tall", "short", "wide", "narrow", "soft"),
    "verb_past": ("found", "carried", "painted", "cleaned", "visited", "watched", "bought", "sold", "built",
                  "fixed", "washed", "moved", "opened", "closed", "liked", "wanted", "needed", "borrowed",
                  "brought", "heard", "remembered", "forgot", "packed", "dropped", "cooked", "planted",
                  "ordered", "picked", "carved", "mended", "described", "showed", "sent", "kept", "lost"),
    "verb_base": ("find", "carry", "paint", "clean", "visit", "watch", "buy", "sell", "build", "fix", "wash",
                  "move", "open", "close", "like", "want", "need", "borrow", "bring", "hear", "remember",
                  "pack", "drop", "cook", "plant", "order", "pick", "describe", "show", "send", "keep"),
    "preposition": ("near", "behind", "beside", "under", "over", "inside", "across", "around", "through",
                    "after", "before", "with", "without", "from", "into", "at", "by", "for", "in"),
    "time": ("this morning", "last week", "every evening", "at the weekend", "in the summer", "before lunch",
             "after dinner", "three days earlier", "last winter", "at night",
             "in the afternoon", "every year", "at midday", "early in the day", "late at night"),
    "determiner": ("the", "a", "my", "her", "his", "their", "our", "that", "this", "every", "some"),
    "joiner": ("and", "but", "because", "while", "so", "although", "when", "until"),
}

#: Sentence patterns; each ``{part}`` is one word (or phrase) of that part of speech.
_PATTERNS = (
    "{determiner} {adjective} {noun} {verb_past} {determiner} {noun} {preposition} {determiner} {noun}",
    "{name} {verb_past} {determiner} {adjective} {noun} {time}",
    "we will {verb_base} {determiner} {noun} {preposition} {determiner} {noun} {time}",
    "did you {verb_base} {determiner} {adjective} {noun} {time}",
    "{time} {name} and {name} {verb_past} {determiner} {noun}",
    "i think {determiner} {noun} is {adjective} {preposition} {determiner} {noun}",
    "{name} said that {determiner} {noun} was {adjective} and {adjective}",
    "there was {determiner} {adjective} {noun} {preposition} {determiner} {noun}",
    "could you {verb_base} {determiner} {noun} for {name}",
    "{determiner} {noun} {preposition} {determiner} {adjective} {noun} looks {adjective}",
)

#: The words the patterns say themselves ("we will", "looks"), checked like :data:`VOCABULARY`'s.
PATTERN_WORDS: tuple[str, ...] = tuple(sorted({token for pattern in _PATTERNS
                                               for token in re.sub(r"\{\w+\}", " ", pattern).split()}))


def clashes(vocabulary: dict[str, tuple[str, ...]], words: tuple[str, ...]) -> list[str]:
    """Vocabulary words that are, sound like, begin with or end with a command word ("on" may end
    a word: "-tion", "lemon" do not say it)."""
    found = []
    lowered = [w.lower() for w in words]  # in any case, as synth.says_a_command compares
    for part, entries in vocabulary.items():
        for entry in entries:
            for token in entry.lower().split():
                for word in lowered:
                    ends = word != "on" and token.endswith(word)
                    if token.startswith(word) or ends or synth.says_a_command(token, (word,)):
                        found.append(f"{part}: {token} ({word})")
    return found


def vocabulary_without(words: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """:data:`VOCABULARY` less every entry that says ``words`` (:func:`clashes`): the grammar of talk for
    a model of other words ("music", "lamp", "open"). It is :data:`VOCABULARY` itself for words it never
    says (the default ten), so their sentences stay those of the same seed. ValueError naming ``words``
    where the sentence patterns say one ("there", "could") or a part of speech would be left empty."""
    found = clashes({"sentence": PATTERN_WORDS}, words)
    require(not found, "words", "command words that the talk vocabulary never says", found[:5])
    kept = {part: tuple(entry for entry in entries if not clashes({part: (entry,)}, words))
            for part, entries in VOCABULARY.items()}
    empty = [part for part, entries in kept.items() if not entries]
    require(not empty, "words", "command words that leave words of every part of speech to the talk",
            clashes({part: VOCABULARY[part] for part in empty}, words)[:5])
    return kept


def draw_sentences(count: int, rng: np.random.Generator, *, clauses_range: tuple[int, int] = (1, 2),
                   vocabulary: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """``count`` sentences of one to ``clauses_range[1]`` clauses joined by a conjunction, of
    ``vocabulary``'s words (default :data:`VOCABULARY`; :func:`vocabulary_without` gives one without
    a model's own command words)."""
    vocabulary = VOCABULARY if vocabulary is None else vocabulary
    out = []
    for _ in range(count):
        parts = []
        for i in range(int(rng.integers(clauses_range[0], clauses_range[1] + 1))):
            pattern = _PATTERNS[int(rng.integers(len(_PATTERNS)))]
            fields = {part: entries[int(rng.integers(len(entries)))] for part, entries in vocabulary.items()}
            clause = pattern.format(**fields)
            parts.append(clause if i == 0 else f"{fields['joiner']} {clause}")
        out.append(" ".join(parts) + ".")
    return out


@dataclass(frozen=True, kw_only=True)
class TalkOptions:
    """``sentences`` per engine; ``words``: the command words no sentence may hold (the vocabulary's
    entries that say one are left out, :func:`vocabulary_without`; a word the sentence patterns say is
    refused); ``voices``:
    the engines, voices, speeds and pitches (:class:`edgesense.train.synth.SynthOptions`; its
    word fields are not used); ``max_clauses``: a sentence's longest run of joined clauses."""

    sentences: int = 300
    words: tuple[str, ...] = DEFAULT_COMMAND_WORDS
    seed: int = 0
    max_clauses: int = 2
    voices: synth.SynthOptions = synth.SynthOptions()

    def __post_init__(self) -> None:
        require(is_int(self.sentences) and 1 <= self.sentences < INT_LIMIT, "sentences", "an integer in [1, 2**63)",
                self.sentences)
        require(is_int(self.max_clauses) and self.max_clauses >= 1, "max_clauses", "an integer >= 1",
                self.max_clauses)
        require(isinstance(self.voices, synth.SynthOptions), "voices", "SynthOptions", self.voices)
        require(is_seed(self.seed), "seed", SEED_EXPECTED, self.seed)
        # a word the talk could not be checked against (a list without its commas: "lights music") is refused:
        # the talk would say it
        require(isinstance(self.words, tuple) and len(self.words) > 0 and all(synth.is_word(w) for w in self.words),
                "words", f"{synth.WORDS_EXPECTED}, at least one", self.words)
        vocabulary_without(self.words)  # the talk leaves out the vocabulary's entries that say them


@dataclass(frozen=True, kw_only=True)
class TalkReport:
    out_dir: Path
    written: tuple[Path, ...]
    failed: tuple[tuple[Path, str], ...]
    seconds: float
    speakers: tuple[str, ...]
    elapsed_s: float
    already_there: int = 0  # planned sentences the folder held already, byte for byte (--force, the same seed)

    def summary(self) -> str:
        text = (f"wrote {len(self.written)} sentences ({self.seconds / 60:.1f} min of talk) to {self.out_dir} from "
                f"{len(self.speakers)} synthetic speakers in {self.elapsed_s:.1f} s")
        if self.already_there:
            text += f"; {synth.ALREADY_THERE.format(self.already_there, 'sentences')}"
        if self.failed:
            text += f"; {len(self.failed)} failed, e.g. {self.failed[0][0].name}: {self.failed[0][1]}"
        return text


def _say(job: synth.SpeakJob, speak, options: synth.SynthOptions, earlier) -> float | None:
    """Speak and write one sentence (:func:`edgesense.train.synth.write_new_wav`); returns its length
    in seconds, None when the folder held it already."""
    speech = synth.peak_normalised(speak(job, 1.0), job, options)
    if synth.write_new_wav(job.path, speech, options.sample_rate_hz, earlier) is None:
        return None
    return speech.size / options.sample_rate_hz


def _add_transcripts(out_dir: Path, jobs: list[synth.SpeakJob], written: set[Path]) -> None:
    """Add a line for each of ``jobs`` ``written`` to ``out_dir``'s :data:`TRANSCRIPTS_NAME`, after
    the lines of the sentences it already lists. The file is replaced whole or not at all
    (:func:`edgesense.app.cli.write_atomic`): on a full disk the lines it listed stay, none cut short."""
    from edgesense.app.cli import write_atomic

    path = out_dir / TRANSCRIPTS_NAME
    earlier = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = [f"{job.path.relative_to(out_dir).as_posix()}\t{job.word}" for job in jobs if job.path in written]
    if earlier and not earlier.endswith("\n"):
        earlier += "\n"
    write_atomic(path, (earlier + "".join(f"{line}\n" for line in lines)).encode("utf-8"), what=TRANSCRIPTS_NAME)


def synthesize_talk(out_dir: str | Path, options: TalkOptions = TalkOptions(), *, force: bool = False) -> TalkReport:
    """Write ``options.sentences`` sentences per engine into ``out_dir`` (module docstring),
    each engine's speakers taken round robin in a random order. A folder that holds files is a
    ValueError unless ``force``; a missing engine or voice is a RuntimeError naming what to
    install; both before anything is written. With ``force`` the sentences join those already
    there (none is written over, none written twice: one the folder holds byte for byte, from the
    same seed, is skipped) and ``transcripts.txt`` gains their lines."""
    voices = options.voices
    out_dir = Path(out_dir)
    refuse_files_in("--out", out_dir, force=force)
    speakers, piper = synth.engine_speakers(voices)
    rng = np.random.default_rng(options.seed)
    vocabulary = vocabulary_without(options.words)
    left_out = clashes(VOCABULARY, options.words)
    if left_out:
        logger.info("the talk leaves out %d words that say a command word: %s", len(left_out), ", ".join(left_out))
    jobs: list[synth.SpeakJob] = []
    taken: Counter[str] = Counter()
    for engine, pairs in speakers.items():
        order = rng.permutation(len(pairs))
        for i, sentence in enumerate(draw_sentences(options.sentences, rng, clauses_range=(1, options.max_clauses),
                                                       vocabulary=vocabulary)):
            voice, variant = pairs[order[i % len(order)]]
            speaker = synth.speaker_name(engine, voice, variant)
            path = out_dir / speaker / f"{speaker}_{taken[speaker]}.wav"
            while path.exists():  # --force into a folder of talk: beside its sentences, never over one
                taken[speaker] += 1
                path = out_dir / speaker / f"{speaker}_{taken[speaker]}.wav"
            taken[speaker] += 1
            jobs.append(synth.SpeakJob(path=path, label="talk", word=sentence, engine=engine, voice=voice,
                                       variant=variant, **synth.draw_parameters(engine, voices, rng)))
    earlier = synth.earlier_clips(jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        done, failed = synth.speak_jobs(jobs, voices, piper, lambda job, speak: _say(job, speak, voices, earlier),
                                        unit="sentence")
    except synth.SpeakInterrupted as stop:
        said = {job.path for job, duration_s in stop.done if duration_s is not None}
        _add_transcripts(out_dir, jobs, said)
        logger.warning("interrupted: wrote %d of the %d sentences planned into %s, each one whole and in %s "
                       "(usable as it is); for the rest, run the same command again with --force (what it wrote "
                       "is not written twice)", len(said), len(jobs), out_dir, TRANSCRIPTS_NAME)
        raise
    except synth.SpeakOutOfRoom as full:
        said = {job.path for job, duration_s in full.done if duration_s is not None}
        listed = f"in {TRANSCRIPTS_NAME}"
        try:
            _add_transcripts(out_dir, jobs, said)
        except OSError as exc:
            listed = f"but not listed in {TRANSCRIPTS_NAME} ({exc.strerror or exc})"
        raise OSError(f"{full.path}: cannot write it ({full.strerror}); wrote {len(said)} of the {len(jobs)} "
                      f"sentences planned into {out_dir}, each one whole, {listed}; once there is room, run the same "
                      "command again with --force (what it wrote is not written twice)") from full
    written = [job.path for job, duration_s in done if duration_s is not None]
    seconds = sum(duration_s for _, duration_s in done if duration_s is not None)
    ok = set(written)
    _add_transcripts(out_dir, jobs, ok)
    report = TalkReport(out_dir=out_dir, written=tuple(sorted(written)), failed=tuple(failed), seconds=seconds,
                        speakers=tuple(sorted({job.path.parent.name for job in jobs if job.path in ok})),
                        elapsed_s=time.perf_counter() - started, already_there=len(done) - len(written))
    return report  # its summary is the result `edgesense synth-talk` prints (stdout): not logged too


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TalkOptions()
    parser.add_argument("--out", required=True, type=path_argument,
                        help="output folder (name it in a training config's data.speech_negatives)")
    parser.add_argument("--sentences", type=int, default=defaults.sentences,
                        help="sentences per engine (default %(default)s)")
    parser.add_argument("--engine", choices=tuple(synth.ENGINE_CHOICES), default="espeak",
                        help="espeak (espeak-ng), piper (neural voices: the [voices] extra) or all "
                             "(default %(default)s)")
    parser.add_argument("--words", default=",".join(defaults.words),
                        help="comma-separated command words the talk must never say (default %(default)s)")
    # None: not given (each acts only with its engine: synth.engine_voices); the defaults are the options'.
    parser.add_argument("--voices", default=None,
                        help=f"comma-separated espeak-ng voices (default {','.join(defaults.voices.voices)})")
    parser.add_argument("--piper-voices", default=None,
                        help="comma-separated installed packages holding piper voices (NAME.onnx + NAME.onnx.json)"
                             f" (default {','.join(defaults.voices.piper_voices)})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="random seed of the sentences, voices and speeds (default %(default)s)")
    parser.add_argument("--workers", type=int, default=defaults.voices.workers,
                        help="espeak-ng processes at a time; piper's onnxruntime threads (default %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="write into a folder that already holds files (beside them: none is written over, "
                             "none written twice, transcripts.txt gains the new sentences)")


#: Option fields as the flags a user types (messages name the flag, not the field).
FLAGS = {"sentences": "--sentences", "words": "--words", "seed": "--seed", **synth.FLAGS}


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import user_names

    espeak_voices, piper_voices = synth.engine_voices(args)
    with user_names(FLAGS):
        voices = replace(synth.SynthOptions(), voices=espeak_voices, workers=args.workers,
                         engines=synth.ENGINE_CHOICES[args.engine], piper_voices=piper_voices, seed=args.seed)
        options = TalkOptions(sentences=args.sentences, words=synth.word_list(args.words), seed=args.seed,
                              voices=voices)
    report = synthesize_talk(args.out, options, force=args.force)
    print(report.summary())
    return 0 if not report.failed else 1
