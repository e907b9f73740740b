#!/usr/bin/env python3
"""How far Google's speech_embedding gets on the benchmark's streams once a head on it is taught the stream.

``speech_embedding`` (the audio teacher's backbone, the ``[teacher]`` extra) with a small head
(the audio teacher's: layer norm, Conv1D, max-pool, dense) trained here for the stream: the
training speakers' clips placed anywhere in a window over the training pool's noise at drawn
levels and SNRs, windows of other people's talk from the training pool of ``speech_negatives`` as
``_unknown_``, and background windows as ``_silence_``. The head runs over the benchmark's tuning
streams as a device would run it (every hop, on the audio before it: nine embeddings, 1.4 s, or
with ``--context 5`` five, 1.1 s), and ``edgesense bench --tuning-only`` scores those posteriors
exactly as it scores a model's (the sweep, the budgets, the DET curve): the bench runs in-process
with its per-hop scorer replaced by the head's. ``--heads N`` averages N heads (seeds SEED …
SEED + N − 1); ``--with-student`` scores the mean of the head's and ``--model``'s posteriors
instead: a two-model detector. Every other figure of that report (clips, photos, the level
envelope) is the ``--model``'s own; the evaluation streams are never built.

The study that led to the device's second opinion: ``edgesense train-stream-heads`` trains the
same heads (:mod:`edgesense.train.stream_heads`, whose training windows this script uses) into one
file that a device config names, and ``edgesense bench --config`` scores the pair as the loop runs
it. The two TFLite files of ``speech_embedding`` are 2.4 MB (float) and their audio path costs
about twice the student's per second of stream (``--cost``). Findings and every command:
docs/BENCHMARK.md, "Is the gap the student's or the streams'?".

    .venv/bin/python scripts/teacher_stream_study.py --out runs/ts --heads 5 --context 5 --with-student
    .venv/bin/python scripts/teacher_stream_study.py --cost     # what it costs against the bundled model

writes ``<out>/study.json`` (the tuning budgets and DET curve) and ``<out>/bench/`` (the bench run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.bench import streams as bench_streams
from edgesense.bench.streams import StreamPosteriors
from edgesense.runtime.interpreter import InterpreterOptions
from edgesense.runtime.model import EdgeModel
from edgesense.runtime.speech_embedding import MEL_HOP_SAMPLES, MEL_LEAD_FRAMES, SAMPLE_RATE_HZ, make_interpreters
from edgesense.schema.validate import require
from edgesense.train.stream_heads import StreamHeadsOptions, mix, training_material
from edgesense.train.teachers.audio import AudioTeacherOptions, fit_audio_head
from edgesense.train.teachers.speech_embedding import (
    EMBEDDING_DIM, MEL_BINS, STRIDE_FRAMES, WINDOW_FRAMES, SpeechEmbedding, SpeechEmbeddingOptions, embedding_windows,
    model_files,
)

log = logging.getLogger("teacher_stream_study")

CONTEXT_EMBEDDINGS = 9  #: the default: 1.4 s of audio, what the head sees at every hop
CHUNK_FRAMES = 3000  #: 30 s of mel frames a call on a stream
EMBED_BATCH = 512  #: embeddings a call
COST_REPEATS = 300
COST_STREAM_S = 20
COST_HOP_MS = 100.0  #: the student's command hop on every device config but Jetson Orin's


def talk_contexts(scorer: "StreamHead", talk: list[np.ndarray], noise: list[np.ndarray], *, variants: int,
                  seed: int) -> np.ndarray:
    """Every context of ``scorer``'s length in every talk recording (each ``variants`` times over drawn
    noise at a drawn level): the head learns continuous talk as a whole, not a few windows of it."""
    context = scorer.context
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(variants):
        for rec in talk:
            emb = scorer.embeddings(mix(rec.astype(np.float32), (0, rec.size), noise, rng))
            if len(emb) >= context:
                idx = np.arange(len(emb) - context + 1)[:, None] + np.arange(context)[None, :]
                out.append(emb[idx])
    return np.concatenate(out) if out else np.zeros((0, context, EMBEDDING_DIM), np.float32)


class HeadEnsemble:
    """The mean of several heads' probabilities (seeds differ: one head's stream figures swing by
    tens of points from seed to seed)."""

    def __init__(self, heads: list) -> None:
        require(len(heads) >= 1, "heads", "at least one", len(heads))
        self.heads = heads

    def predict(self, x: np.ndarray, **kwargs) -> np.ndarray:
        return np.mean([h.predict(x, **kwargs) for h in self.heads], axis=0)


class StreamHead:
    """The head over a stream: embeddings every 80 ms, then the head on the last ``context`` at every hop."""

    def __init__(self, embedder: SpeechEmbedding, head, labels: tuple[str, ...], *, student=None,
                 student_weight: float = 0.5, context: int = CONTEXT_EMBEDDINGS) -> None:
        require(context >= 1, "context", "at least one embedding", context)
        require(0.0 <= student_weight <= 1.0, "student_weight", "a number in [0, 1]", student_weight)
        self.embedder, self.head, self.labels, self.context = embedder, head, labels, context
        # the bench's own scorer: with it, each hop's posteriors are the weighted mean of both
        self.student, self.student_weight = student, student_weight

    def embeddings(self, samples: np.ndarray) -> np.ndarray:
        """``(E, 96)``: embedding ``j`` holds mel frames ``[8 j, 8 j + 76)`` of the stream."""
        frames_total = samples.size // MEL_HOP_SAMPLES - MEL_LEAD_FRAMES
        mel = []
        for first in range(0, max(frames_total, 0), CHUNK_FRAMES):
            count = min(CHUNK_FRAMES, frames_total - first)
            start = first * MEL_HOP_SAMPLES
            piece = samples[start:start + (count + MEL_LEAD_FRAMES) * MEL_HOP_SAMPLES]
            mel.append(self.embedder.mel(piece[None, :])[0, :count])
        mel_all = np.concatenate(mel)[None]
        windows = embedding_windows(mel_all, window_frames=WINDOW_FRAMES, stride_frames=STRIDE_FRAMES)[0]
        return np.concatenate([self.embedder.embed(windows[s:s + EMBED_BATCH])
                               for s in range(0, len(windows), EMBED_BATCH)])

    def posteriors(self, model, samples: np.ndarray, *, hop_ms: float = 100.0, **_: object) -> StreamPosteriors:
        samples = np.asarray(samples, np.float32)
        emb = self.embeddings(samples)
        hop = int(round(SAMPLE_RATE_HZ * hop_ms / 1000))
        ends = np.arange(hop, samples.size + 1, hop)
        frames = ends // MEL_HOP_SAMPLES - MEL_LEAD_FRAMES
        available = np.where(frames >= WINDOW_FRAMES, (frames - WINDOW_FRAMES) // STRIDE_FRAMES + 1, 0)
        available = np.minimum(available, len(emb))
        keep = available >= self.context
        idx = available[keep][:, None] - self.context + np.arange(self.context)[None, :]
        probs = self.head.predict(emb[idx], batch_size=4096, verbose=0).astype(np.float32)
        times = ends[keep] * 1000.0 / SAMPLE_RATE_HZ
        if self.student is not None:
            own = self.student(model, samples, hop_ms=hop_ms, progress=False)
            require(own.labels == self.labels, "labels", f"the model's {own.labels}", self.labels)
            _, mine, theirs = np.intersect1d(np.round(times, 3), np.round(own.times_ms, 3), return_indices=True)
            w = self.student_weight
            times, probs = times[mine], (1.0 - w) * probs[mine] + w * own.posteriors[theirs]
        return StreamPosteriors(times_ms=times, posteriors=probs, labels=self.labels,
                                hop_ms=float(hop_ms), duration_ms=samples.size * 1000.0 / SAMPLE_RATE_HZ)


def fresh_bench_folder(out: Path) -> Path:
    """``out/bench``, without the posterior cache an earlier study left there: the bench keys its cache by the
    model, the stream and the hop, and this study swaps its scorer in (other heads, another ``--context`` or
    ``--student-weight`` each run), so an earlier run's scores would be taken for this one's."""
    import shutil

    folder = out / "bench"
    shutil.rmtree(folder / "cache", ignore_errors=True)
    return folder


def study(args: argparse.Namespace) -> dict:
    """Train the head, score the tuning streams with it; the summary (``<out>/study.json``)."""
    started = time.perf_counter()
    model = EdgeModel.load(args.model)
    options = StreamHeadsOptions(heads=args.heads, context_embeddings=args.context, variants=args.variants,
                                 talk_per_variant=args.talk_per_variant, silence_per_variant=args.silence_per_variant,
                                 unknown_weight=args.unknown_weight, epochs=args.epochs, seed=args.seed,
                                 placement="clip")  # the study's tables were made with whole clips placed
    m = training_material(model, args.speech_commands, args.noise, args.negatives, options)
    x, y, vx, vy, talk, noise, unknown = m.x, m.y, m.vx, m.vy, m.talk, m.noise, m.unknown
    embedder = SpeechEmbedding(SpeechEmbeddingOptions(pad_ms=0))
    t0 = time.perf_counter()
    ex, vex = embedder(x), embedder(vx)
    log.info("%d training windows embedded in %.0f s", len(x), time.perf_counter() - t0)
    scorer = StreamHead(embedder, None, m.labels, context=args.context,
                        student_weight=args.student_weight)
    contexts = talk_contexts(scorer, talk, noise, variants=args.talk_variants, seed=args.seed + 2)
    log.info("%d contexts of talk", len(contexts))
    ex = np.concatenate([ex, contexts])
    y = np.concatenate([y, np.full(len(contexts), unknown, np.int32)])
    teacher = AudioTeacherOptions(enabled=True, pad_ms=0, epochs=args.epochs)
    scorer.head = HeadEnsemble([fit_audio_head(ex, y, len(m.labels), teacher, seed=args.seed + k,
                                               validation=(vex, vy), class_scale={unknown: args.unknown_weight})
                                for k in range(args.heads)])
    val_accuracy = float(np.mean(np.argmax(scorer.head.predict(vex, verbose=0), axis=1) == vy))
    log.info("validation speakers, one window each over training-pool noise: %.1f %%", 100 * val_accuracy)

    from edgesense.app.cli import main as edgesense_main

    own_scorer = bench_streams.stream_posteriors
    if args.with_student:
        scorer.student = own_scorer

    bench = ["bench", "--model", str(args.model), "--speech-commands", str(args.speech_commands), "--split", "testing",
             "--negatives", str(args.negatives), "--references", str(args.out / "no-references"), "--tuning-only",
             "--out", str(fresh_bench_folder(args.out))]
    for flag, folders in (("--noise", args.noise), ("--tuning-noise", args.tuning_noise)):
        bench += [part for folder in folders for part in (flag, str(folder))]
    if args.max_latency_p95_ms is not None:
        bench += ["--max-latency-p95-ms", f"{args.max_latency_p95_ms:g}"]
    if args.quick:
        bench.append("--quick")
    bench_streams.stream_posteriors = scorer.posteriors  # the bench's per-hop scorer, for this run
    try:
        rc = edgesense_main(bench)
    finally:
        bench_streams.stream_posteriors = own_scorer
    require(rc == 0, "edgesense bench", "exit code 0", rc)
    streaming = json.loads((args.out / "bench" / "report.json").read_text())["streaming"]
    return {"model": str(args.model), "training_windows": int(len(x)), "talk_contexts": int(len(contexts)),
            "options": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, bool)) or v is None},
            "validation_window_accuracy": round(val_accuracy, 4),
            "tuning_budgets": streaming["tuning_budgets"], "det_tuning": streaming["det"]["tuning"],
            "elapsed_s": round(time.perf_counter() - started, 1)}


def cost(model_path: Path, *, repeats: int = COST_REPEATS) -> dict:
    """What the head's audio path costs against ``model_path``'s, on one thread: ``speech_embedding``'s
    mel step on 80 ms of new audio and one embedding (best of ``repeats``), the student's mean per
    100 ms hop over a 20 s stream (the bench's stage timings, best of three), each per second of audio."""
    rng = np.random.default_rng(0)
    files = model_files()
    timings = []
    shapes = [(1, (STRIDE_FRAMES + MEL_LEAD_FRAMES) * MEL_HOP_SAMPLES), (1, WINDOW_FRAMES, MEL_BINS, 1)]
    for interpreter, shape in zip(make_interpreters(1, files), shapes):
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(shape), strict=True)
        interpreter.allocate_tensors()
        x = rng.normal(size=shape).astype(np.float32)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            interpreter.set_tensor(index, x)
            interpreter.invoke()
            best = min(best, time.perf_counter() - t0)
        timings.append(best * 1000.0)
    student = EdgeModel.load(model_path, InterpreterOptions(num_threads=1))
    stream = (0.05 * rng.normal(size=COST_STREAM_S * SAMPLE_RATE_HZ)).astype(np.float32)
    per_hop = min(sum(float(np.sum(v)) for v in p.timings_ms.values()) / p.times_ms.size
                  for p in (bench_streams.stream_posteriors(student, stream, hop_ms=COST_HOP_MS, progress=False)
                            for _ in range(3)))
    steps_per_s = SAMPLE_RATE_HZ / (STRIDE_FRAMES * MEL_HOP_SAMPLES)
    head_ms_per_s, student_ms_per_s = steps_per_s * sum(timings), per_hop * 1000.0 / COST_HOP_MS
    return {"files_bytes": sum(os.path.getsize(f) for f in files), "mel_step_ms": round(timings[0], 3),
            "embedding_ms": round(timings[1], 3), "student_hop_ms": round(per_hop, 3),
            "ms_per_s_of_audio": {"speech_embedding": round(head_ms_per_s, 2), "student": round(student_ms_per_s, 2)},
            "ratio": round(head_ms_per_s / student_ms_per_s, 2)}


def main(argv: list[str] | None = None) -> int:
    shared = Path("../shared/data")
    p = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/edgesense.tflite"),
                   help="the deployed model whose split (and, with --with-student, posteriors) the study uses")
    p.add_argument("--out", type=Path, help="the study's folder (not with --cost)")
    p.add_argument("--cost", action="store_true", help="only time speech_embedding against --model on one thread")
    p.add_argument("--speech-commands", type=Path, default=shared / "speech_commands")
    p.add_argument("--noise", type=Path, action="append", help="default: ambient/ and noise/ (their training pool)")
    p.add_argument("--negatives", type=Path, default=shared / "speech_negatives")
    p.add_argument("--tuning-noise", type=Path, action="append", help="default: scene_ambient/ (all of it)")
    p.add_argument("--variants", type=int, default=6, help="noisy placements of every training clip")
    p.add_argument("--talk-per-variant", type=int, default=1500, help="windows of talk per variant")
    p.add_argument("--silence-per-variant", type=int, default=200, help="background windows per variant")
    p.add_argument("--talk-variants", type=int, default=0,
                   help="every context of the training pool's talk, this many times over noise, as _unknown_")
    p.add_argument("--unknown-weight", type=float, default=1.0, help="_unknown_'s weight, in classes")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--context", type=int, default=CONTEXT_EMBEDDINGS,
                   help="embeddings the head sees (9: 1.4 s; 5: 1.1 s, for earlier decisions)")
    p.add_argument("--heads", type=int, default=1, help="heads trained with seeds SEED, SEED+1, ...; their mean scores")
    p.add_argument("--with-student", action="store_true",
                   help="score the weighted mean of the head's and the --model's posteriors (a two-model detector)")
    p.add_argument("--student-weight", type=float, default=0.5, help="the --model's weight in that mean")
    p.add_argument("--max-latency-p95-ms", type=float, default=None, help="the bench's option of that name")
    p.add_argument("--quick", action="store_true", help="the bench's --quick (minutes of stream, to try it out)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.noise = args.noise or [shared / "ambient", shared / "noise"]
    args.tuning_noise = args.tuning_noise or [shared / "scene_ambient"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.cost and args.out is None:
        p.error("--out is required (or --cost)")
    for flag in ("variants", "epochs", "context", "heads"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag}: expected at least 1, got {getattr(args, flag)}")
    for flag in ("talk_per_variant", "silence_per_variant", "talk_variants"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag.replace('_', '-')}: expected at least 0, got {getattr(args, flag)}")
    try:
        if args.cost:
            print(json.dumps(cost(args.model), indent=1))
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        summary = study(args)
    except (ValueError, OSError, RuntimeError) as exc:  # TeacherUnavailable is a RuntimeError: what to install
        print(f"teacher_stream_study: {exc}", file=sys.stderr)
        return 2
    (args.out / "study.json").write_text(json.dumps(summary, indent=1))
    rows = summary["tuning_budgets"]["budgets"]
    print("tuning streams, hit rate within " + ", ".join(f"{r['max_false_accepts_per_hour']:g}" for r in rows)
          + " false accepts per hour: " + " / ".join(f"{100 * (r['hit_rate'] or 0):.1f}" for r in rows)
          + f" % (mean {100 * summary['tuning_budgets']['mean_hit_rate']:.1f} %); p95 latency "
          + " / ".join(f"{r['latency_p95_ms']}" for r in rows) + " ms")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
