"""Where a training epoch's time goes: making a batch against the training step itself.

Issue 15 asks for a default training run in 15 minutes on 2 cores. This loads a training config's
data once, then times, over ``--steps`` steps each, (1) making one per-step batch
(:class:`edgesense.train.trainer.FusionBatches`: drawing, augmenting and the log-mel features of
64 clips and 64 photos) and (2) one ``train_on_batch`` on a fixed batch (forward and backward, the
optimizer step) of what the trainer fits: the fused model's present-rows view, each encoder on the
rows where its modality is present. It projects an epoch and a run from them. Run it on a quiet
machine: another job on the same cores doubles both. The two flags time the step as it was before
issue 15's changes, for a before/after figure on one machine:

    .venv/bin/python scripts/profile_training.py --config train/configs/shared_data.yaml
    # every encoder on every row (the whole model fitted, as before the present-rows view)
    .venv/bin/python scripts/profile_training.py --config train/configs/shared_data.yaml --all-rows
    # and Keras' own batch normalization too (before the fused kernel)
    .venv/bin/python scripts/profile_training.py --config train/configs/shared_data.yaml --all-rows --keras-batch-norm
    # inside Keras' fit, as the trainer runs it: the step with batches that cost nothing (a few made
    # beforehand, served again and again) against the step with batches made beside it
    .venv/bin/python scripts/profile_training.py --config train/configs/shared_data.yaml --fit
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

WARMUP_STEPS = 3
#: Batches made beforehand for the --fit timing, served in turn (a few, so that fit's input shapes vary).
SERVED_BATCHES = 4


def _served(batches, steps: int, *, workers: int):
    """A Keras dataset of ``steps`` steps serving ``batches`` in turn: fit's own cost, without making batches."""
    import keras

    class Served(keras.utils.PyDataset):
        def __len__(self) -> int:
            return steps

        def __getitem__(self, step: int):
            return batches[step % len(batches)]

    return Served(workers=workers, use_multiprocessing=False)


def _fit_step_s(model, source, steps: int) -> float:
    """Seconds a step of ``model.fit`` over ``source`` (one epoch of ``steps``), after one epoch
    that traces the step for the shapes ``source`` gives."""
    model.fit(source, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(source, epochs=1, verbose=0)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="training YAML")
    parser.add_argument("--steps", type=int, default=20, help="steps to time, each part")
    parser.add_argument("--keras-batch-norm", action="store_true",
                        help="build the model with keras.layers.BatchNormalization instead of the fused layer")
    parser.add_argument("--all-rows", action="store_true",
                        help="fit the whole model, every encoder on every row, instead of the present-rows view")
    parser.add_argument("--fit", action="store_true",
                        help="also time --steps steps inside Keras' fit (the trainer's batch threads): batches made "
                             "beforehand against batches made beside the step")
    args = parser.parse_args()

    import keras

    import edgesense.train.model
    if args.keras_batch_norm:
        edgesense.train.model.FusedBatchNormalization = keras.layers.BatchNormalization

    from edgesense.train.config import load_train_config
    from edgesense.train.distill import DistillationLoss
    from edgesense.train.model import OUTPUT_COMMAND, OUTPUT_SCENE, build_fusion_model, build_present_rows_view
    from edgesense.train.trainer import FusionBatches, load_dataset, steps_per_epoch

    config = load_train_config(args.config)
    started = time.perf_counter()
    ds = load_dataset(config)
    print(f"data loaded in {time.perf_counter() - started:.1f} s")
    steps = steps_per_epoch(ds, config)
    batches = FusionBatches(ds, config, steps=steps, epoch_seed=config.seed, packed_targets=True,
                            present_rows_only=not args.all_rows)
    started = time.perf_counter()
    for step in range(args.steps):
        x, y, w = batches[step]
    batch_s = (time.perf_counter() - started) / args.steps

    model = build_fusion_model(num_commands=len(ds.command_labels), num_scenes=max(len(ds.scene_labels), 2),
                               options=config.model, audio_frontend=config.audio_frontend,
                               image_frontend=config.image_frontend)
    if not args.all_rows:
        model = build_present_rows_view(model)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=config.train.learning_rate),
                  loss={OUTPUT_COMMAND: DistillationLoss(len(ds.command_labels), config.train.distill_temperature),
                        OUTPUT_SCENE: DistillationLoss(max(len(ds.scene_labels), 2), config.train.distill_temperature,
                                                       name="scene_distillation")})
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(x, y, w)
    started = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y, w)
    step_s = (time.perf_counter() - started) / args.steps

    if args.fit:
        fit_step_s = {what: _fit_step_s(model, source, args.steps) for what, source in (
            ("made beforehand", _served([batches[k] for k in range(SERVED_BATCHES)], args.steps,
                                        workers=config.train.workers)),
            ("made beside the step", FusionBatches(ds, config, steps=args.steps, epoch_seed=config.seed,
                                                   workers=config.train.workers, packed_targets=True,
                                                   present_rows_only=not args.all_rows)))}
        for what, s in fit_step_s.items():
            print(f"inside fit ({config.train.workers} batch threads), batches {what}: {s:.3f} s a step; "
                  f"{config.train.epochs} epochs of {steps} steps: {config.train.epochs * steps * s / 60:.1f} min")
    epoch_s = steps * (batch_s + step_s)
    print(f"per step: batch {batch_s:.3f} s, training step {step_s:.3f} s ({args.steps} steps each)")
    print(f"per epoch of {steps} steps: {steps * batch_s:.0f} s making batches + {steps * step_s:.0f} s training "
          f"= {epoch_s:.0f} s in sequence; {config.train.epochs} epochs: {config.train.epochs * epoch_s / 60:.1f} min "
          f"(without validation; batches made beside the step hide up to "
          f"{steps * min(batch_s, step_s):.0f} s an epoch)")


if __name__ == "__main__":
    main()
