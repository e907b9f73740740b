"""Does the camera path gain from test-time changes? Two probes on the validation photos.

* ``mirror``: the deployed int8 model names each photo image-only, as ``edgesense bench`` does,
  once as it is, once mirrored left to right, and once by the mean of the two scene
  distributions (test-time augmentation; the device would pay a second ``encode_image``).
* ``--run RUN --sizes ...``: the run's float Keras model rebuilt for other input sizes (its
  convolutions and global pooling take any size) names the same photos resized to each size
  (training crops 75-100 % of a photo's side, so objects look larger there than in a whole
  photo; "FixRes", Touvron et al. 2019, gains by testing at a higher resolution).

The split is the model's own (its metadata; ``--split validation`` by default, never testing for
a choice). Prints one JSON object.

    .venv/bin/python scripts/scene_test_time_probe.py --model models/edgesense.tflite \
        --scenes ../shared/data/intel_scenes/train --run runs/rt --sizes 128 144 160
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.train.data import SplitSpec
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.runtime.model import EdgeModel
from edgesense.train import data

SPLITS = ("validation", "testing")


def split_items(scenes: Path, split: SplitSpec, part: str) -> list:
    return split.split_photos(data.load_image_folder(scenes))[part]


def mirror_probe(model: EdgeModel, photos: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image-only accuracy on ``photos`` (uint8 RGB at the model's size): as they are, mirrored, and
    by the mean of the two scene distributions."""
    plain, mirrored = [], []
    for photo in photos.astype(np.float32):
        plain.append(model.fuse(None, model.encode_image(photo))[1])
        mirrored.append(model.fuse(None, model.encode_image(np.ascontiguousarray(photo[:, ::-1])))[1])
    plain, mirrored = np.array(plain), np.array(mirrored)
    return {name: float(np.mean(scores.argmax(axis=1) == labels))
            for name, scores in (("as_is", plain), ("mirrored", mirrored), ("mean_of_both", plain + mirrored))}


def rebuilt_model(run: Path, size_px: int):
    """The run's float Keras model rebuilt for ``size_px`` square photos, with the run's own weights
    (its convolutions and global pooling take any size)."""
    import keras

    from edgesense.frontend.audio import AudioFrontendOptions
    from edgesense.schema.validate import from_mapping
    from edgesense.train.config import ModelOptions
    from edgesense.train.model import build_fusion_model

    info = json.loads((run / "run.json").read_text())
    model = build_fusion_model(num_commands=len(info["labels"]["command"]), num_scenes=len(info["labels"]["scene"]),
                               options=from_mapping(ModelOptions, info["config"]["model"], source=f"{run}/run.json",
                                                    path="config.model"),
                               audio_frontend=AudioFrontendOptions.from_dict(info["audio_frontend"]),
                               image_frontend=ImageFrontendOptions(width_px=size_px, height_px=size_px))
    model.set_weights(keras.saving.load_model(run / "model.keras", compile=False).get_weights())
    return model


def size_probe(run: Path, items: list, labels: np.ndarray, sizes: list[int]) -> dict[str, float]:
    """Image-only accuracy of the run's float model at each input size."""
    from edgesense.train.trainer import predict_heads

    out = {}
    for size in sizes:
        photos, _ = data.load_images(items, (size, size))
        scores = predict_heads(rebuilt_model(run, size), images=photos)["scene"]
        out[str(size)] = float(np.mean(scores.argmax(axis=1) == labels))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a deployed EdgeSense .tflite")
    parser.add_argument("--scenes", type=Path, required=True, help="the scene folder the model was trained on")
    parser.add_argument("--split", choices=SPLITS, default="validation")
    parser.add_argument("--run", type=Path, default=None, help="a run folder for the size probe")
    parser.add_argument("--sizes", type=int, nargs="+", default=[], metavar="PX")
    args = parser.parse_args(argv)
    try:
        if args.sizes and args.run is None:
            raise ValueError("--sizes: needs --run (the float model to rebuild)")
        if args.run is not None and not args.sizes:  # it was read by nothing, and the report did not say so
            raise ValueError("--run: acts only with --sizes (the size probe it rebuilds the float model for), "
                             "which is not given")
        model = EdgeModel.load(args.model)
        items = split_items(args.scenes, SplitSpec.from_metadata(model.metadata, None), args.split)
        lookup = {label: i for i, label in enumerate(model.scene_labels)}
        missing = sorted({item.label for item in items} - set(lookup))
        if missing:
            raise ValueError(f"--scenes {args.scenes}: classes {missing} are not the model's {list(lookup)}")
        labels = np.array([lookup[item.label] for item in items])
        frontend = model.image_frontend
        photos, _ = data.load_images(items, (frontend.height_px, frontend.width_px))
        report = {"photos": len(items), "split": args.split, "mirror": mirror_probe(model, photos, labels)}
        if args.sizes:
            report["sizes"] = size_probe(args.run, items, labels, args.sizes)
    except (ValueError, OSError) as exc:
        print(f"scene_test_time_probe: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
