"""``edgesense train --config train.yaml``: train the fusion model and write a run folder."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from edgesense.app.cli import path_argument

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=path_argument, help="training YAML (see train/configs/)")
    parser.add_argument("--out", type=path_argument, default=None,
                        help="run folder (default: runs/NAME); an existing run is never replaced without --force")
    parser.add_argument("--force", action="store_true",
                        help="replace the run already in --out (it is kept until the new run is complete)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multi_worker"), default=None,
                        help="tf.distribute strategy: mirrored for several GPUs, multi_worker for a cluster "
                             "(TF_CONFIG names the workers)")
    parser.add_argument("--logical-cpus", type=int, default=None, metavar="N",
                        help=f"split the CPU into N logical devices, 1 to {MAX_LOGICAL_CPUS} (to try --strategy "
                             "mirrored without GPUs)")
    parser.add_argument("--seed", type=int, default=None, help="override seed")
    parser.add_argument("--init-from", type=path_argument, default=None, metavar="RUN",
                        help="start from the weights of run folder RUN (same architecture): a fine-tune, "
                             "e.g. a longer schedule continued at a lower --set train.learning_rate")
    parser.add_argument("--av", type=path_argument, default=None, metavar="DIR",
                        help="your own places: a paired CLASS/NAME.jpg + CLASS/NAME.wav folder (edgesense record); "
                             "its photos and sounds join the scene data (sets data.av)")
    parser.add_argument("--set", action="append", default=None, metavar="SECTION.FIELD=VALUE", dest="overrides",
                        help="override one config field, value in YAML (repeatable; the last of one field wins; a "
                             "mapping, e.g. train={epochs: 1}, sets the fields it names; a "
                             "relative data path is from the config's folder, as in the file), e.g. "
                             "--set train.real_speech_share=0.5")


#: The most logical CPU devices --logical-cpus makes (a way to try --strategy mirrored without GPUs).
MAX_LOGICAL_CPUS = 64


def _configure_devices(logical_cpus: int | None) -> None:
    import tensorflow as tf

    if logical_cpus is not None and logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before TensorFlow starts (and logs) and before
    # the data loads: the config, --out, --init-from.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgesense.app.cli import EXIT_INTERRUPTED, input_file, stop_on_signals, user_names
    from edgesense.train.config import INT_LIMIT, load_train_config
    from edgesense.train.data import check_init_split, check_word_folders
    from edgesense.train.runfolder import (
        check_init_from, check_out_dir, check_out_outside_data, discard_staging, start_staging,
    )

    if args.logical_cpus is not None and not 1 <= args.logical_cpus <= MAX_LOGICAL_CPUS:
        raise ValueError(f"--logical-cpus: expected an integer in [1, {MAX_LOGICAL_CPUS}], got {args.logical_cpus}")
    if args.epochs is not None and not 1 <= args.epochs < INT_LIMIT:  # refused before the data loads
        raise ValueError(f"--epochs: expected an integer in [1, 2**63), got {args.epochs}")
    config_path = input_file("--config", args.config)
    overrides = list(args.overrides or ())
    if args.av is not None:
        if not args.av.is_dir():
            raise ValueError(f"--av: expected a folder of CLASS/NAME.jpg + CLASS/NAME.wav pairs, got {str(args.av)!r}"
                             f" ({'a file' if args.av.exists() else 'does not exist'})")
        # Quoted (a JSON string is a YAML one): a folder named "places #2" or "home: kitchen" is that folder,
        # not "places" (a comment cut off) or a mapping.
        av_override = f"data.av={json.dumps(str(args.av.resolve()))}"
        overrides.append(av_override)
    names = {str(config_path): f"--config {config_path}"}
    if args.av is not None:
        names[f"--set {av_override}"] = f"--av {args.av}"
    # Loaded with the config (after every --set: the flag wins), so that a field at odds with them (a file's
    # train.embedding_hint_weight with --strategy mirrored) is named where it was set.
    for flag, field, value in (("--epochs", "train.epochs", args.epochs), ("--strategy", "train.strategy",
                                                                           args.strategy)):
        if value is not None:
            overrides.append(f"{field}={value}")
            names[f"--set {field}={value}"] = f"{flag} {value}"
    with user_names(names):
        config = load_train_config(config_path, overrides)
    if args.seed is not None:
        with user_names({"seed": "--seed"}):
            config = dataclasses.replace(config, seed=args.seed)
    out_dir = args.out or Path("runs") / config.name
    check_out_dir(out_dir, args.force)
    check_out_outside_data(out_dir, config.data)
    if args.init_from is not None:
        check_init_from(args.init_from, out_dir)
        check_init_split(args.init_from, config.data, flag="--init-from")
    discard_staging(start_staging(out_dir))  # a read-only folder, or a file in the way, is said now
    for field in ("speech_commands", "synthetic_speech"):  # a folder of one's own words, data.words unset
        for root in getattr(config.data, field):
            check_word_folders(root, config.data.words, field=field)
    _configure_devices(args.logical_cpus)

    from edgesense.train.trainer import StopSwitch, train

    logging.getLogger("train").setLevel(logging.INFO)
    # Ctrl-C / SIGTERM once an epoch is checkpointed: the run is written from the best one so far.
    with stop_on_signals() as request:
        switch = StopSwitch()
        request.attach(switch)
        with user_names({"init_from": "--init-from"}):  # what is found once the model is built (another one)
            metrics = train(config, out_dir, verbose=1 if sys.stderr.isatty() else 2, init_from=args.init_from,
                            replace=args.force, stop=switch)
    print(json.dumps({"run": str(out_dir), **metrics}, indent=2))
    return EXIT_INTERRUPTED if switch.requested else 0
