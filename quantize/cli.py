"""``edgesense quantize RUN_DIR --out models/NAME.tflite [--mode] [--report [PATH]] ...``.

Converts a training run to one ``.tflite`` (three signatures, embedded metadata) and
optionally writes the float-vs-TFLite parity report. Problems a user can fix raise
ValueError / RuntimeError / OSError with one clear message; ``edgesense.app.cli`` prints it and
exits with status 2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgesense.app.cli import file_argument, folder_argument, refuse_existing, refuse_file_in_the_way, user_names
from edgesense.quantize.convert import MODES, QuantizeOptions, convert_run

__all__ = ["add_arguments", "run", "EXIT_BUDGET_FAILED"]

#: Exit status with ``--fail-on-budget`` when a budget check fails.
EXIT_BUDGET_FAILED = 1
_REPORT_NEXT_TO_MODEL = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", type=folder_argument,
                        help="training run folder (model.keras, run.json, calibration.npz, ...)")
    parser.add_argument("--out", required=True, metavar="PATH", type=file_argument,
                        help="output .tflite path, e.g. models/NAME.tflite")
    parser.add_argument("--mode", choices=MODES, default="int8",
                        help="int8: full-integer (device default); float16 / dynamic: float I/O variants")
    parser.add_argument("--report", nargs="?", const=_REPORT_NEXT_TO_MODEL, default=None, metavar="PATH",
                        help="write the float-vs-TFLite parity report (report.json + report.md) next to the model, "
                             "or in folder PATH, or at PATH.json / PATH.md")
    parser.add_argument("--calibration-samples", type=int, default=QuantizeOptions().calibration_samples, metavar="N",
                        help="at most N audio clips and N images from calibration.npz (int8 only; default: all)")
    parser.add_argument("--name", default=None, help="model name in the metadata (default: the run's name)")
    parser.add_argument("--max-kb", type=int, default=None, metavar="KB", help="model size budget for --report (200)")
    parser.add_argument("--fail-on-budget", action="store_true",
                        help=f"exit with status {EXIT_BUDGET_FAILED} when a --report budget check fails")
    parser.add_argument("--qat", action="store_true",
                        help="quantization-aware fine-tuning first (needs the run's training data); the fine-tuned "
                             "run is written to RUN_DIR-qat and converted")
    parser.add_argument("--qat-epochs", type=int, default=None, metavar="N", help="fine-tuning epochs for --qat (3)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --out and --report files (and, with --qat, the run already in "
                             "RUN_DIR-qat)")


def _say_written(result, path: Path) -> None:
    parts = ", ".join(f"{key} {size} B" for key, size in result.part_bytes.items())
    print(f"wrote {path} ({result.size_bytes} bytes, {result.mode}; weights: {parts})")


#: QuantizeOptions / ReportOptions / QatOptions fields as the flags a user types.
FLAGS = {"calibration_samples": "--calibration-samples", "name": "--name", "mode": "--mode",
         "epochs": "--qat-epochs", "max_model_bytes": "--max-kb"}


def run(args: argparse.Namespace) -> int:
    if args.max_kb is not None and args.max_kb < 1:  # checked before the conversion, in the flag's unit
        raise ValueError(f"--max-kb: expected a positive number of KB, got {args.max_kb}")
    # A flag that only acts with another is refused without it (it would be silently ignored).
    for flag, given, needed, needed_given in (("--max-kb", args.max_kb is not None, "--report", args.report),
                                              ("--fail-on-budget", args.fail_on_budget, "--report", args.report),
                                              ("--qat-epochs", args.qat_epochs is not None, "--qat", args.qat or None)):
        if given and needed_given is None:
            raise ValueError(f"{flag}: acts only with {needed}, which is not given")
    if args.calibration_samples is not None and args.mode != "int8":  # float16 / dynamic read no calibration set
        raise ValueError(f"--calibration-samples: acts only with --mode int8, got --mode {args.mode}")
    if args.qat and args.mode != "int8":
        raise ValueError(f"--qat: expected --mode int8 (quantization-aware training targets int8), got {args.mode}")
    with user_names(FLAGS):
        options = QuantizeOptions(mode=args.mode, calibration_samples=args.calibration_samples, name=args.name)
        if args.qat:
            from edgesense.quantize.qat import QatOptions

            qat_options = QatOptions() if args.qat_epochs is None else QatOptions(epochs=args.qat_epochs)
    # Nothing already there is replaced unasked, and that is said before any fine-tuning or conversion.
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: is a folder; expected a .tflite file path")
    # A file where its folder should be is --out's to name (it was "File exists", or blamed on --report).
    refuse_file_in_the_way(f"--out {args.out}", Path(args.out).parent, expected="a folder for the model")
    refuse_existing("--out", Path(args.out), force=args.force)
    if args.report is not None:  # and the report can be made once the model is written
        from edgesense.quantize.convert import VALIDATION_FILE, read_run_info, validation_arrays
        from edgesense.quantize.report import report_paths

        report_flag = f"--report {args.report}" if args.report else "--report"
        out = Path(args.out).resolve()
        for path in report_paths(args.out, args.report or None):
            # The report at the model's path, or in a folder of its name: that failed once both were made.
            if path.resolve() == out or out in path.resolve().parents:
                raise ValueError(f"{report_flag}: expected a place apart from the model, got {path}, which is "
                                 f"{'--out' if path.resolve() == out else 'inside --out'} {args.out}")
            refuse_existing("--report", path, force=args.force)
            refuse_file_in_the_way(report_flag, path.parent, expected=f"a folder for {path.name}")
        validation = Path(args.run_dir) / VALIDATION_FILE
        if Path(args.run_dir).is_dir():
            if not validation.is_file():
                raise ValueError(f"--report: expected the run's {VALIDATION_FILE} to compare on, got no {validation}")
            # A damaged one, or one that does not fit the run, is said now, not after the model is written.
            _, labels, audio_frontend, image_frontend = read_run_info(args.run_dir)
            arrays = validation_arrays(validation, labels, audio_frontend, image_frontend)
            if not len(arrays["audio_features"]) and not len(arrays["image"]):
                raise ValueError(f"--report: expected clips or photos to compare on in {validation}, found none")
    run_dir = args.run_dir
    if args.qat:
        from edgesense.quantize.qat import default_out_dir, qat_finetune
        from edgesense.train.runfolder import check_out_dir

        check_out_dir(default_out_dir(run_dir), args.force, flag="--qat",
                      choose="move that folder away (--qat writes the fine-tuned run to RUN_DIR-qat)")
        run_dir = str(qat_finetune(run_dir, options=qat_options, force=args.force))
        print(f"quantization-aware fine-tuning: wrote {run_dir}")
    if args.report is None:
        result = convert_run(run_dir, args.out, options, force=args.force)
        _say_written(result, Path(args.out))
        return 0

    from edgesense.quantize.report import (
        BYTES_PER_KB,
        ReportOptions,
        budget_lines,
        build_report,
        report_paths,
        write_report,
    )

    report_options = (ReportOptions() if args.max_kb is None
                      else ReportOptions(max_model_bytes=args.max_kb * BYTES_PER_KB))
    out = Path(args.out)
    json_path, md_path = report_paths(out, args.report or None)
    # The model and its report are put in place together: the model is written beside --out under a hidden name
    # and renamed once its report is written. Interrupted (Ctrl-C while the report is made) or failing, it leaves
    # an earlier model and report that --force would replace as they were, never a new model beside the report
    # of the one before.
    staged = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        result = convert_run(run_dir, staged, options, force=args.force, shown_as=out)
        report = build_report(run_dir, staged, report_options)
        report["model"] = str(out)
        write_report(report, json_path, md_path)
        os.replace(staged, out)
    except (OSError, ValueError, RuntimeError) as exc:  # a full disk, an op TFLite lacks: named as --out
        if str(staged) not in str(exc):
            raise
        kind = OSError if isinstance(exc, OSError) else ValueError if isinstance(exc, ValueError) else RuntimeError
        raise kind(str(exc).replace(str(staged), str(out))) from exc
    finally:
        staged.unlink(missing_ok=True)
    _say_written(result, out)
    for head, stats in report["heads"].items():
        print(f"{head}: float {stats['float_accuracy']:.4f}  tflite {stats['tflite_accuracy']:.4f}  "
              f"agreement {stats['top1_agreement']:.4f}  mean |diff| {stats['mean_abs_diff']:.5f}")
    for line in budget_lines(report):
        print(line)
    print(f"report: {json_path} and {md_path}")
    if args.fail_on_budget and not report["budget"]["pass"]:
        return EXIT_BUDGET_FAILED
    return 0
