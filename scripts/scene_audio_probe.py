"""Which audio path serves places? A linear probe on two representations of 1-s ambience.

Issue 17 asks whether the command encoder's embedding (what the ``fuse`` signature already
receives) serves scenes, or whether a small second audio branch would do better. This
script trains the same softmax-regression probe on

* ``command_encoder``: the deployed model's ``encode_audio`` embedding (int8, dequantized), and
* ``log_mel_stats``: the mean and standard deviation over time of each log-mel bin, the input
  a few-KB second branch would see,

with 1-s snippets of the *training* pool of ``scene_ambient`` (``edgesense.train.pools``), and
scores it on snippets of the *evaluation* pool at -35...-20 dBFS (recordings it never saw).

    .venv/bin/python scripts/scene_audio_probe.py --model models/edgesense.tflite \
        --scene-ambient ../shared/data/scene_ambient
"""

from __future__ import annotations

import sys
import json
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.frontend.audio import log_mel_batch
from edgesense.frontend.wav import read_wav
from edgesense.quantize.adapt import linear_probe
from edgesense.runtime.model import EdgeModel
from edgesense.train.pools import split_recordings

TRAIN_DBFS = (-45.0, -15.0)
EVAL_DBFS = (-35.0, -20.0)
def snippets(paths: list[Path], classes: list[str], per_class: int, dbfs: tuple[float, float], clip: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    by_class = {c: [read_wav(p, sample_rate_hz=16000) for p in paths if p.parent.name == c] for c in classes}
    x, y = [], []
    for k, c in enumerate(classes):
        for _ in range(per_class):
            rec = by_class[c][rng.integers(len(by_class[c]))]
            rec = np.tile(rec, -(-clip // rec.size)) if rec.size < clip else rec
            start = rng.integers(0, rec.size - clip + 1)
            s = rec[start:start + clip].astype(np.float64)
            s *= 10 ** (rng.uniform(*dbfs) / 20) / max(np.sqrt(np.mean(s ** 2)), 1e-9)
            x.append(np.clip(s, -1, 1).astype(np.float32))
            y.append(k)
    return np.stack(x), np.array(y)


def represent(model: EdgeModel, clips: np.ndarray) -> dict[str, np.ndarray]:
    feats = log_mel_batch(clips, model.audio_frontend)
    return {"command_encoder": np.stack([model.encode_audio(f) for f in feats]),
            "log_mel_stats": np.concatenate([feats.mean(axis=1), feats.std(axis=1)], axis=1)}


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--scene-ambient", type=Path, required=True)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--eval-per-class", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = EdgeModel.load(args.model)
    classes = list(model.scene_labels)
    pools = split_recordings(sorted(args.scene_ambient.glob("*/*.wav")))
    rng = np.random.default_rng(args.seed)
    clip = model.audio_frontend.clip_samples
    x_train, y_train = snippets(pools["training"], classes, args.train_per_class, TRAIN_DBFS, clip, rng)
    x_eval, y_eval = snippets(pools["evaluation"], classes, args.eval_per_class, EVAL_DBFS, clip, rng)
    r_train, r_eval = represent(model, x_train), represent(model, x_eval)
    out = {}
    for name in r_train:
        pred = linear_probe(r_train[name], y_train, r_eval[name], len(classes))
        out[name] = {"accuracy": round(float(np.mean(pred == y_eval)), 3),
                     "per_class": {c: round(float(np.mean(pred[y_eval == k] == k)), 3) for k, c in enumerate(classes)},
                     "dimensions": int(r_train[name].shape[1])}
    print(json.dumps({"model": str(args.model), "chance": round(1 / len(classes), 3), **out}, indent=2))


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
