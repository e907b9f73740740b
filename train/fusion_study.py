"""Fusion study: does adding sound help the scene task, and when?

Image-only, audio-only and each fusion strategy of :mod:`train.model` (concat,
weighted_sum, attention, late) are trained on the same paired audio-visual scene set and
scored on its held-out photos, clean and with a degraded camera (dark, blurred, occluded
frames).

**The pairing is synthetic.** There is no real paired audio-visual data in the project, so
:func:`make_paired_av_set` writes a ``CLASS/NAME.jpg + CLASS/NAME.wav`` folder (the layout of
:func:`train.data.load_av_folder`) by pairing each scene photo with a 1-s ambient sound
whose *source* correlates with the scene class (street <-> traffic, buildings <-> cafe,
glacier <-> fridge hum, forest <-> pink "wind in leaves" noise, mountain <-> brown "wind"
noise, sea <-> amplitude-modulated "surf" noise), chosen from the class's own source with
probability ``match_probability`` and from another class's source otherwise, at a random
level and mixed with random coloured noise. Only three real recordings exist (cafe,
fridge, traffic; CC0), so the synthetic sources stand in for the rest. What the study
shows is therefore *how each fusion strategy uses a second, partly informative modality
when the first degrades* -- not how much real sound helps real scene recognition.

Splits: photos keep their file names, so the AV set splits exactly like the scene set
(hash of the file stem, :func:`train.data.split_image_items`); models are selected on the
validation split and scored once on the testing split.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import keras
import numpy as np
from tqdm import tqdm

from edgesense.frontend.audio import AudioFrontendOptions, log_mel_spectrogram
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.frontend.wav import read_wav, write_wav
from edgesense.schema.validate import require, require_kinds, require_range
from edgesense.train import augment
from edgesense.train import data as datasets
from edgesense.train.config import derived_seed
from edgesense.train.model import (
    FUSION_STRATEGIES,
    INPUT_AUDIO,
    INPUT_AUDIO_PRESENT,
    INPUT_IMAGE,
    INPUT_IMAGE_PRESENT,
    OUTPUT_SCENE,
    ModelOptions,
    build_fusion_model,
)

__all__ = [
    "CONDITIONS",
    "SCENE_SOUNDS",
    "FusionStudyOptions",
    "degrade",
    "make_paired_av_set",
    "pairing_note",
    "run_fusion_study",
    "plot_fusion_study",
]

log = logging.getLogger(__name__)

CONDITIONS = ("clean", "dark", "blurred", "occluded")
SYNTHETIC_SOURCES = ("pink", "brown", "surf", "white")
#: Scene class -> the sound source it is paired with (classes not named here get unused sources in turn).
SCENE_SOUNDS = {"street": "traffic", "buildings": "cafe", "glacier": "fridge", "forest": "pink",
                "mountain": "brown", "sea": "surf"}
#: How the note names a source (a recording not named here by its file's stem).
SOURCE_NAMES = {"fridge": "fridge hum", "white": "white noise", "pink": "pink noise", "brown": "brown noise",
                "surf": "modulated 'surf' noise"}


def pairing_note(sound_for_scene: Mapping[str, str]) -> str:
    """What the study's pairing is, naming the source each scene class of this run was given."""
    pairs = ", ".join(f"{label}-{SOURCE_NAMES.get(source, source)}" for label, source in sound_for_scene.items())
    return ("SYNTHETIC pairing: each photo is paired with a 1-s ambient snippet whose source correlates with "
            f"the scene class ({pairs}), from the class's own source with probability "
            "match_probability and from another class's otherwise. It shows how each fusion strategy uses a "
            "second, partly informative modality when the camera degrades, not the value of real sound.")


@dataclass(frozen=True, kw_only=True)
class FusionStudyOptions:
    """Size of the study. ``per_class``: photos per scene class in the AV set."""

    per_class: int = 150
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 3e-3
    match_probability: float = 0.75
    modality_dropout: float = 0.2
    sound_level_dbfs: tuple[float, float] = (-35.0, -15.0)
    snr_db: tuple[float, float] = (5.0, 20.0)
    strategies: tuple[str, ...] = FUSION_STRATEGIES
    model: ModelOptions = ModelOptions(audio_channels=32, audio_blocks=2, image_channels=(16, 32, 32, 64, 64),
                                       image_strides=(2, 2, 2, 2, 1), embedding_dim=32, dropout=0.1,
                                       batchnorm_momentum=0.9)
    seed: int = 0

    def __post_init__(self) -> None:
        require_kinds(self)
        for name in ("per_class", "epochs", "batch_size"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, "an integer >= 1", value)
        require(0 < self.learning_rate < 1, "learning_rate", "in (0, 1)", self.learning_rate)
        require(0 <= self.match_probability <= 1, "match_probability", "in [0, 1]", self.match_probability)
        require(0 <= self.modality_dropout < 0.5, "modality_dropout", "in [0, 0.5)", self.modality_dropout)
        require_range("sound_level_dbfs", self.sound_level_dbfs)
        require_range("snr_db", self.snr_db)
        require(len(self.strategies) >= 1 and all(s in FUSION_STRATEGIES for s in self.strategies), "strategies",
               f"a non-empty subset of {FUSION_STRATEGIES}", self.strategies)

    @classmethod
    def quick(cls) -> "FusionStudyOptions":
        return cls(per_class=10, epochs=2, batch_size=16,
                   model=ModelOptions(audio_channels=8, audio_blocks=1, image_channels=(8, 16),
                                      image_strides=(2, 2), embedding_dim=8, dropout=0.0))


# ----------------------------------------------------------------------------- the paired set


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _synthetic(source: str, n: int, rng: np.random.Generator, sample_rate_hz: int) -> np.ndarray:
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0, "surf": 1.5}[source]
    spectrum = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = _unit(np.fft.irfft(spectrum / f ** (exponent / 2), n=n))
    if source == "surf":  # slow swells
        t = np.arange(n) / sample_rate_hz
        x = x * (0.4 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * t + rng.uniform(0, 2 * np.pi)) ** 2)
    return _unit(x)


def _sound_map(classes: Sequence[str], recordings: Mapping[str, np.ndarray]) -> dict[str, str]:
    available = list(recordings) + list(SYNTHETIC_SOURCES)
    mapping = {c: SCENE_SOUNDS[c] for c in classes if SCENE_SOUNDS.get(c) in available}
    unused = [s for s in available if s not in mapping.values()]
    for c in classes:
        if c not in mapping:
            mapping[c] = unused.pop(0) if unused else available[len(mapping) % len(available)]
    return mapping


def make_paired_av_set(scenes_root: str | Path, ambient_dir: str | Path | None, out_root: str | Path,
                       options: FusionStudyOptions = FusionStudyOptions(),
                       audio_frontend: AudioFrontendOptions = AudioFrontendOptions()) -> dict[str, Any]:
    """Write the synthetic paired set (see the module docstring); returns its description."""
    out_root = Path(out_root)
    if out_root.exists():
        shutil.rmtree(out_root)
    rng = np.random.default_rng(options.seed)
    sr = audio_frontend.sample_rate_hz
    n = audio_frontend.clip_samples
    index = datasets.load_image_folder(scenes_root)
    recordings: dict[str, np.ndarray] = {}
    if ambient_dir is not None and Path(ambient_dir).is_dir():
        for path in sorted(Path(ambient_dir).glob("*.wav")):
            samples = read_wav(path, sample_rate_hz=sr)
            if samples.size >= n:
                recordings[path.stem] = samples
    mapping = _sound_map(index.classes, recordings)
    sources = sorted(set(mapping.values()))
    by_class: dict[str, list] = {}
    for item in index.items:
        by_class.setdefault(item.label, []).append(item)
    written = 0
    matched = 0
    for label in index.classes:
        items = by_class[label]
        chosen = [items[i] for i in sorted(rng.permutation(len(items))[:options.per_class])]
        folder = out_root / label
        folder.mkdir(parents=True, exist_ok=True)
        for item in chosen:
            own = rng.random() < options.match_probability or len(sources) == 1
            source = mapping[label] if own else str(rng.choice([s for s in sources if s != mapping[label]]))
            matched += int(own)
            if source in recordings:
                rec = recordings[source]
                start = int(rng.integers(0, rec.size - n + 1))
                sound = _unit(rec[start:start + n].astype(np.float64))
            else:
                sound = _synthetic(source, n, rng, sr)
            colour = _synthetic(str(rng.choice(["white", "pink", "brown"])), n, rng, sr)
            snr = rng.uniform(*options.snr_db)
            mix = _unit(sound + colour * 10 ** (-snr / 20)) * 10 ** (rng.uniform(*options.sound_level_dbfs) / 20)
            shutil.copyfile(item.path, folder / f"{item.path.stem}{item.path.suffix.lower()}")
            write_wav(folder / f"{item.path.stem}.wav", np.clip(mix, -1, 1).astype(np.float32), sr)
            written += 1
    info = {"root": str(out_root), "pairs": written, "classes": list(index.classes), "sound_for_scene": mapping,
            "real_recordings": sorted(recordings), "match_probability": options.match_probability,
            "matched_fraction": round(matched / max(written, 1), 3), "note": pairing_note(mapping)}
    (out_root / "README.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ----------------------------------------------------------------------------- degradations


def degrade(images: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> the same frames as a failing camera would give them."""
    require(condition in CONDITIONS, "condition", f"one of {', '.join(CONDITIONS)}", condition)
    x = np.asarray(images)
    if condition == "clean":
        return x.copy()
    if condition == "dark":  # underexposed, with sensor noise
        dark = x.astype(np.float32) * 0.12 + rng.normal(0, 3.0, x.shape)
        return np.clip(dark, 0, 255).astype(np.uint8)
    if condition == "blurred":  # out of focus / fogged lens
        return np.stack([cv2.GaussianBlur(img, (0, 0), sigmaX=4.0) for img in x])
    out = x.copy()  # occluded: an object in front of the lens covers 60 % of the frame
    h, w = x.shape[1:3]
    oh, ow = int(h * 0.775), int(w * 0.775)
    for img in out:
        y0, x0 = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
        img[y0:y0 + oh, x0:x0 + ow] = rng.integers(0, 60, 3, dtype=np.uint8)
    return out


# ----------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class _Split:
    audio: np.ndarray  # features (N, frames, bins)
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int32 (N,)


def _load_split(items, classes, audio_frontend: AudioFrontendOptions, image_frontend: ImageFrontendOptions,
                what: str) -> _Split:
    lookup = {c: i for i, c in enumerate(classes)}
    images, report = datasets.load_images(items, (image_frontend.height_px, image_frontend.width_px), what=what)
    kept = [items[i] for i in report.kept]
    audio_items = [datasets.AudioItem(it.audio_path, it.label, it.image_path.stem) for it in kept]
    clips, audio_report = datasets.load_clips(audio_items, audio_frontend, what=f"{what} sounds")
    keep = list(audio_report.kept)
    feats = np.stack([log_mel_spectrogram(c, audio_frontend) for c in clips]) if len(clips) else \
        np.zeros((0, *audio_frontend.feature_shape), np.float32)
    labels = np.array([lookup[kept[i].label] for i in keep], np.int32)
    return _Split(feats.astype(np.float32), images[keep], labels)


def _inputs(split: _Split, images: np.ndarray, audio_on: np.ndarray, image_on: np.ndarray) -> dict[str, np.ndarray]:
    return {INPUT_AUDIO: split.audio, INPUT_IMAGE: images.astype(np.float32),
            INPUT_AUDIO_PRESENT: audio_on[:, None].astype(np.float32),
            INPUT_IMAGE_PRESENT: image_on[:, None].astype(np.float32)}


def _presence(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.full(n, float(kind != "image_only")), np.full(n, float(kind != "audio_only")))


def _accuracy(model, split: _Split, images: np.ndarray, kind: str) -> float:
    if split.labels.size == 0:
        return float("nan")
    a, v = _presence(kind, split.labels.size)
    probs = model.predict(_inputs(split, images, a, v), batch_size=128, verbose=0)
    return float(np.mean(np.asarray(probs).argmax(-1) == split.labels))


def _train_variant(kind: str, strategy: str, train: _Split, val: _Split, num_scenes: int,
                   options: FusionStudyOptions, audio_frontend, image_frontend) -> tuple[Any, float | None]:
    """A model of ``kind`` trained on ``train`` and its best validation accuracy: the weights of the epoch
    that scored best on ``val``; without validation pairs, those of the last epoch and None."""
    keras.utils.set_random_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    full = build_fusion_model(num_commands=2, num_scenes=num_scenes,
                              options=dataclasses.replace(options.model, fusion=strategy),
                              audio_frontend=audio_frontend, image_frontend=image_frontend)
    model = keras.Model(full.input, full.output[OUTPUT_SCENE], name=f"study_{kind}_{strategy}")
    model.compile(optimizer=keras.optimizers.Adam(options.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    best, best_weights = -1.0, model.get_weights()
    n = train.labels.size
    for _ in range(options.epochs):
        images = augment.augment_images(train.images, rng, augment.ImageAugmentOptions())
        a, v = _presence(kind, n)
        if kind == "fusion":
            drop = rng.random(n)
            a[drop < options.modality_dropout] = 0.0
            v[(drop >= options.modality_dropout) & (drop < 2 * options.modality_dropout)] = 0.0
        model.fit(_inputs(train, images, a, v), train.labels, batch_size=options.batch_size, epochs=1,
                  shuffle=True, verbose=0)
        if not val.labels.size:  # nothing to select on: the last epoch's weights (it kept the first epoch's)
            continue
        score = _accuracy(model, val, val.images, kind)
        if score > best:
            best, best_weights = score, model.get_weights()
    if not val.labels.size:
        return model, None
    model.set_weights(best_weights)
    return model, best


def run_fusion_study(scenes_root: str | Path | None, out_dir: str | Path, *, ambient_dir: str | Path | None = None,
                     av_root: str | Path | None = None, options: FusionStudyOptions = FusionStudyOptions(),
                     audio_frontend: AudioFrontendOptions = AudioFrontendOptions(),
                     image_frontend: ImageFrontendOptions = ImageFrontendOptions(),
                     write: Callable[[Mapping[Path, bytes]], None] | None = None) -> dict[str, Any]:
    """Run the study; writes ``fusion_study.json`` and ``fusion_study.png`` into ``out_dir``, by ``write`` (path ->
    bytes) when given (bench passes its ``write_outputs``, which holds them until its report is written).

    ``av_root``: a real paired folder to use instead of the synthetic one built from
    ``scenes_root`` + ``ambient_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if av_root is None:
        require(scenes_root is not None, "scenes_root", "a scene image folder (or av_root)", scenes_root)
        pairing = make_paired_av_set(scenes_root, ambient_dir, out_dir / "av_synthetic", options, audio_frontend)
        av_root = pairing["root"]
    else:
        pairing = {"root": str(av_root), "note": "real paired folder given with --av"}
    index = datasets.load_av_folder(av_root)
    splits = index.split(validation_percent=10.0, testing_percent=15.0)
    loaded = {name: _load_split(splits[name], index.classes, audio_frontend, image_frontend, f"av {name}")
              for name in ("training", "validation", "testing")}
    train, val, test = loaded["training"], loaded["validation"], loaded["testing"]
    evaluated_on = "testing"
    if test.labels.size == 0:
        log.warning("fusion study: the testing split is empty; scoring on the validation split")
        test, evaluated_on = val, "validation"
    require(train.labels.size > 0, "av set", "training pairs", 0)
    # a small folder whose every pair hashes into training: one line, not numpy's "need at least one array to stack"
    require(test.labels.size > 0, f"av set {av_root}", "validation or testing pairs to score the study on (more "
            "pairs per class: 10 % of them validate, 15 % test)", 0)
    variants = [("image_only", "concat"), ("audio_only", "concat")] + [("fusion", s) for s in options.strategies]
    rng = np.random.default_rng(derived_seed(options.seed, 1))
    degraded = {c: degrade(test.images, c, rng) for c in CONDITIONS}
    results: dict[str, dict[str, float]] = {}
    for kind, strategy in tqdm(variants, desc="fusion study", unit="model", disable=None, leave=False):
        name = kind if kind != "fusion" else f"fusion_{strategy}"
        model, val_acc = _train_variant(kind, strategy, train, val, len(index.classes), options,
                                        audio_frontend, image_frontend)
        results[name] = {c: round(_accuracy(model, test, degraded[c], kind), 4) for c in CONDITIONS}
        results[name]["validation"] = None if val_acc is None else round(val_acc, 4)
        log.info("fusion study %s: %s", name, results[name])
    gain = {name: {c: round(r[c] - results["image_only"][c], 4) for c in CONDITIONS}
            for name, r in results.items() if name.startswith("fusion_")}
    report = {
        "pairing": pairing, "note": pairing["note"],  # make_paired_av_set names its classes' sources
        "classes": list(index.classes), "conditions": list(CONDITIONS), "evaluated_on": evaluated_on,
        "sizes": {"training": int(train.labels.size), "validation": int(val.labels.size),
                  "testing": int(test.labels.size)},
        "options": {"per_class": options.per_class, "epochs": options.epochs,
                    "modality_dropout": options.modality_dropout, "model": dataclasses.asdict(options.model)},
        "accuracy": results, "gain_over_image_only": gain,
    }
    files = {out_dir / "fusion_study.json": (json.dumps(report, indent=2, default=str) + "\n").encode("utf-8"),
             out_dir / "fusion_study.png": _fusion_study_png(report)}
    if write is None:
        for path, data in files.items():
            path.write_bytes(data)
    else:
        write(files)
    return report


def plot_fusion_study(report: Mapping[str, Any], path: str | Path) -> Path:
    Path(path).write_bytes(_fusion_study_png(report))
    return Path(path)


def _fusion_study_png(report: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["accuracy"])
    conditions = list(report["conditions"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, name in enumerate(names):
        values = [report["accuracy"][name][c] for c in conditions]
        ax.bar(np.arange(len(conditions)) + k * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(np.arange(len(conditions)))
    ax.set_xticklabels([f"camera {c}" for c in conditions])
    ax.set_ylabel(f"scene accuracy ({report['evaluated_on']} photos)")
    ax.set_ylim(0, 1)
    ax.axhline(1.0 / max(len(report["classes"]), 1), color="grey", linestyle=":", label="chance")
    ax.set_title("Fusion study (synthetic audio-visual pairing)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()
