"""Does synthesized speech help, and which voice sounds more like people? A cheap proxy.

Issue 15 asks whether piper's neural voice (``synth-commands --engine piper``) helps more than
espeak-ng. Instead of training the fusion model, this trains the audio teacher's small head
(:mod:`edgesense.train.teachers.audio`) on frozen ``speech_embedding`` embeddings
(:mod:`edgesense.train.teachers.speech_embedding`, the ``[teacher]`` extra) of

* ``real``: the training speakers of the real Speech Commands clips only,
* ``real+espeak``, ``real+piper``, ``real+both``: those plus synthetic clips,
* ``espeak only``, ``piper only``: synthetic clips only (how close each voice is to people),

and scores each on the real VALIDATION speakers (the written-down split: salt ``edgesense``,
10 % validation, 20 % testing). Each head trains a fixed number of epochs (no choice on
validation), once per seed; the table gives mean and spread over the seeds. The real test
speakers are scored only with ``--test``, for a final table (never choose on them).

``--synth-per-word`` / ``--synth-unknown`` take the same number of clips from every synthetic
set (a seeded sample), so ``real+espeak`` and ``real+piper`` add as many clips. Synthetic sets
have no ``_silence_``: ``words`` is the accuracy on the ten command words' clips alone, and the
synthetic-only heads are scored on the real clips of the labels they learnt (words and
``_unknown_``).

    .venv/bin/edgesense synth-commands --engine piper --out /tmp/synth-piper --per-word 100 \\
        --unknown-words default --unknown-clips 200
    .venv/bin/python scripts/voice_probe.py --real ../shared/data/speech_commands \\
        --espeak runs/synth --piper /tmp/synth-piper --cache /tmp/voice-probe-cache [--test]
"""

from __future__ import annotations

import sys
import hashlib
import logging
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.train.data import AudioItem, load_clips, load_speech_commands
from edgesense.train.teachers import teacher_logits
from edgesense.train.teachers.audio import AudioTeacherOptions, fit_audio_head
from edgesense.train.teachers.speech_embedding import SpeechEmbedding, SpeechEmbeddingOptions
from edgesense.types import DEFAULT_COMMAND_WORDS, SILENCE_LABEL, UNKNOWN_LABEL

SPLIT = {"validation_percent": 10, "testing_percent": 20, "salt": "edgesense"}  # the written-down split
#: The teacher as train/configs/distilled_stream.yaml runs it.
HEAD = AudioTeacherOptions(enabled=True, pad_ms=250.0, epochs=30)


def _embed(items: list[AudioItem], embedder: SpeechEmbedding, cache: Path | None, what: str) -> np.ndarray:
    key = hashlib.sha256("\n".join(f"{it.path}@{it.offset_ms}" for it in items).encode()).hexdigest()[:16]
    path = cache / f"{what}-{key}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    clips, report = load_clips(items, what=what)
    if len(report.kept) != len(items):
        raise RuntimeError(report.summary())
    x = embedder(clips).astype(np.float32)
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
    return x


def _sample(items: list[AudioItem], per_word: int, unknown: int, rng: np.random.Generator) -> list[AudioItem]:
    out: list[AudioItem] = []
    for label in (*DEFAULT_COMMAND_WORDS, UNKNOWN_LABEL):
        mine = [it for it in items if it.label == label]
        take = unknown if label == UNKNOWN_LABEL else per_word
        if len(mine) < take:
            raise ValueError(f"{label}: {len(mine)} synthetic clips, fewer than the {take} asked for")
        out += [mine[i] for i in sorted(rng.choice(len(mine), take, replace=False))]
    return out


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--espeak", type=Path, required=True)
    parser.add_argument("--piper", type=Path, required=True)
    parser.add_argument("--synth-per-word", type=int, default=100)
    parser.add_argument("--synth-unknown", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="folder for the embeddings (.npy)")
    parser.add_argument("--test", action="store_true", help="also score the real test speakers (final table)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    real = load_speech_commands(args.real)
    labels = real.labels
    lookup = {label: i for i, label in enumerate(labels)}
    split = real.split(**SPLIT)
    rng = np.random.default_rng(0)
    synth = {name: _sample(list(load_speech_commands(folder).items), args.synth_per_word, args.synth_unknown, rng)
             for name, folder in (("espeak", args.espeak), ("piper", args.piper))}

    embedder = SpeechEmbedding(SpeechEmbeddingOptions(pad_ms=HEAD.pad_ms))
    sets = {name: split[part] for name, part in (("real", "training"), ("val", "validation"), ("test", "testing"))}
    sets.update(synth)
    x = {name: _embed(items, embedder, args.cache, name) for name, items in sets.items()}
    y = {name: np.array([lookup[it.label] for it in items], np.int32) for name, items in sets.items()}
    print(f"real: train {len(y['real'])} clips / {real.speakers(sets['real']).__len__()} speakers, "
          f"validation {len(y['val'])} / {len(real.speakers(sets['val']))}, "
          f"test {len(y['test'])} / {len(real.speakers(sets['test']))}; synthetic: "
          + ", ".join(f"{n} {len(y[n])}" for n in synth))

    conditions = {"real": ("real",), "real+espeak": ("real", "espeak"), "real+piper": ("real", "piper"),
                  "real+both": ("real", "espeak", "piper"), "espeak only": ("espeak",),
                  "piper only": ("piper",)}
    silence = lookup[SILENCE_LABEL]
    words = np.array([lookup[w] for w in DEFAULT_COMMAND_WORDS])
    parts = ("val", "test") if args.test else ("val",)
    header = "| training set | clips | " + " | ".join(f"{p} all | {p} words" for p in parts) + " |"
    print(header + "\n|" + "---|" * (2 + 2 * len(parts)))
    for name, members in conditions.items():
        xt = np.concatenate([x[m] for m in members])
        yt = np.concatenate([y[m] for m in members])
        scores: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            head = fit_audio_head(xt, yt, len(labels), HEAD, seed=seed)
            for part in parts:
                keep = y[part] != silence if "real" not in members else np.ones(len(y[part]), bool)
                predicted = teacher_logits(head, x[part]).argmax(-1)
                correct = predicted == y[part]
                scores.setdefault(f"{part} all", []).append(float(correct[keep].mean()))
                scores.setdefault(f"{part} words", []).append(float(correct[np.isin(y[part], words)].mean()))
        cells = " | ".join(f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}" for v in scores.values())
        print(f"| {name} | {len(yt)} | {cells} |", flush=True)


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
