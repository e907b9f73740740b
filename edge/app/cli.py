"""The ``edgesense`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``edgesense run`` on a device never imports TensorFlow. Errors a user can fix
(``ValueError``, ``RuntimeError``, ``OSError``) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import types
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NoReturn, Protocol, Sequence, overload

from edgesense import __version__, extra_hint

#: name -> (module, one-line help). Desktop commands live in edgesense.train, .quantize, .bench and .deploy.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("edgesense.app.run", "run the device loop on a camera+mic or replayed media"),
    "demo": ("edgesense.app.demo", "live camera+mic window with an overlay (falls back to the sample media)"),
    "record": ("edgesense.app.record", "record labelled camera+mic pairs of a place, to train the scenes on"),
    "inspect": ("edgesense.app.inspect", "print a model's metadata, parts and sizes"),
    "bench": ("edgesense.bench.cli", "offline accuracy and latency benchmark"),
    "train": ("edgesense.train.cli", "train the fusion model from a YAML config"),
    "average": ("edgesense.train.average", "average the weights of runs of one model (a model soup) into a new run"),
    "synth-commands": ("edgesense.train.synth",
                       "speak command words (espeak-ng or piper voices) into the Speech Commands layout"),
    "train-stream-heads": ("edgesense.train.stream_heads",
                           "train the second opinion: stream heads on speech_embedding (the [teacher] extra)"),
    "synth-talk": ("edgesense.train.synth_talk",
                   "speak sentences that hold no command word: talk negatives to train on"),
    "mine": ("edgesense.bench.mining", "find the windows of talk where a model fires: hard negatives to train on"),
    "quantize": ("edgesense.quantize.cli", "convert a training run to int8 TFLite (and fp16 / dynamic range)"),
    "adapt": ("edgesense.quantize.adapt",
              "teach a deployed model places: retrain its fusion head on photos and their sounds"),
    "deploy": ("edgesense.deploy.cli", "write a self-contained bundle for a Raspberry Pi or Jetson"),
}

EXIT_USAGE = 2
#: 128 + SIGINT, as a shell reports a command stopped with Ctrl-C.
EXIT_INTERRUPTED = 130
#: Signals that stop a command as Ctrl-C does: SIGHUP comes when its terminal closes (the window, an ssh connection
#: that drops); it killed the process at once (no events flushed, no summary, a run's staging folder left).
#: A terminal's hang-up; None where the system has none (Windows: its ``signal`` module has no SIGHUP, and reading it
#: there failed the import of every command).
SIGHUP: signal.Signals | None = getattr(signal, "SIGHUP", None)
STOP_SIGNALS = tuple(sig for sig in (signal.SIGINT, signal.SIGTERM, SIGHUP) if sig is not None)
#: Of :data:`STOP_SIGNALS`, those that stay ignored when the command was started ignoring them (``nohup``).
IGNORED_STAY_IGNORED = tuple(sig for sig in (SIGHUP,) if sig is not None)
DESKTOP_MODULES = ("tensorflow", "keras", "tqdm", "matplotlib")
#: The extra a desktop command needs (the others need "train"); bench runs without TensorFlow.
COMMAND_EXTRAS = {"bench": "bench", "mine": "bench"}


def _missing_extra(exc: ModuleNotFoundError, command: str | None) -> RuntimeError | None:
    """A desktop library that is not installed, said with the extra to install (None: another module)."""
    if not exc.name or exc.name.split(".")[0] not in DESKTOP_MODULES:
        return None
    extra = COMMAND_EXTRAS.get(command or "", "train")
    return RuntimeError(f"this command needs the {extra} extra ({exc.name} is not installed): {extra_hint(extra)}")


def _load(module_name: str, command: str | None = None):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        error = _missing_extra(exc, command)
        if error is not None:
            raise error from exc
        raise


#: argparse's own error messages, said in the form of every other error line (``FLAG: expected ..., got ...``);
#: ``{prog}`` is the command's (``edgesense bench``). Others keep argparse's words without its "argument ".
_ARGPARSE_ERRORS = (
    (r"argument (?P<flag>.+?): invalid int value: (?P<got>.*)", "{flag}: expected an integer, got {got}"),
    (r"argument (?P<flag>.+?): invalid float value: (?P<got>.*)", "{flag}: expected a number, got {got}"),
    (r"argument (?P<flag>.+?): invalid choice: (?P<got>.*?) \(choose from (?P<choices>.*)\)",
     "{flag}: expected one of {choices}, got {got}"),
    (r"argument (?P<flag>.+?): expected one argument", "{flag}: expected a value after it, got none"),
    (r"argument (?P<flag>.+?): expected at least one argument", "{flag}: expected at least one value, got none"),
    (r"the following arguments are required: (?P<flags>.*)",
     "{flags}: expected a value (required; {prog} --help lists the flags), got none"),
    (r"unrecognized arguments: (?P<got>.*)", "expected the flags {prog} --help lists, got {got}"),
)


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors (a mistyped number, an unknown flag, a missing one) are one line
    ``PROG: error: FLAG: expected ..., got ...`` and exit code 2, as every other error of EdgeSense's
    commands, instead of the usage block and argparse's own words. Its subcommands' parsers are of this class
    too (argparse makes them of the parent's)."""

    #: The subcommands' parsers by name (``edgesense``'s), to say a flag a command does not know in its words.
    command_parsers: Mapping[str, argparse.ArgumentParser] = types.MappingProxyType({})

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        for pattern, form in _ARGPARSE_ERRORS:
            match = re.fullmatch(pattern, message, flags=re.DOTALL)
            if match:
                message = form.format(prog=self.prog, **match.groupdict())
                break
        else:
            message = message.removeprefix("argument ")
        self.exit(EXIT_USAGE, f"{journal_prefix(logging.ERROR)}{self.prog}: error: {one_line_message(message)}\n")


def path_argument(value: str) -> Path:
    """An argparse ``type`` for a path flag: an empty value (a shell variable that was not set) is refused
    instead of becoming ``Path("")``, which is the current folder."""
    if not value:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(value)


def file_argument(value: str) -> str:
    """An argparse ``type`` for a flag naming a file, kept a string (a shipped config's name, e.g. ``rpi4``, is one
    too): an empty value is refused as such, instead of becoming the current folder (``--config .: is a folder``)."""
    if not value:
        raise argparse.ArgumentTypeError("expected a file, got an empty string")
    return value


def folder_argument(value: str) -> str:
    """:func:`file_argument` for a flag naming a folder: an empty value is not the current folder."""
    if not value:
        raise argparse.ArgumentTypeError("expected a folder, got an empty string")
    return value


def one_line_message(exc: BaseException | str) -> str:
    """``exc``'s message (or a message) on one line: a line break (in a path the user typed) is shown as ``\\n`` (where
    :func:`edgesense.schema.validate.one_line` folds a library's multi-line message into spaces, this keeps
    the path as it is)."""
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")


@overload
def input_file(flag: str, value: str | os.PathLike[str]) -> Path: ...
@overload
def input_file(flag: str, value: None) -> None: ...
@overload
def input_file(flag: str, value: str | os.PathLike[str] | None) -> Path | None: ...


def input_file(flag: str, value: str | os.PathLike[str] | None) -> Path | None:
    """``value`` of ``flag`` as a Path (None stays None); ValueError naming the flag when it is
    a folder or does not exist."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; expected a file")
    if not path.exists():
        raise ValueError(f"{flag} {path}: no such file")
    return path


def file_in_the_way(folder: str | os.PathLike[str]) -> Path | None:
    """The file that keeps ``folder`` from being a folder: ``folder`` itself, or the nearest of its
    parents that exists, when that is not a folder; ``None`` when ``folder`` is one or can be made."""
    path = Path(folder)
    nearest = next((p for p in (path, *path.parents) if p.exists()), None)
    return nearest if nearest is not None and not nearest.is_dir() else None


def refuse_file_in_the_way(what: str, folder: str | os.PathLike[str], *, expected: str = "a folder") -> None:
    """A ValueError naming ``what`` (a flag, a field) when ``folder`` is a file or lies inside one
    (:func:`file_in_the_way`): ``WHAT: expected EXPECTED, got FOLDER[, inside FILE], which is a file``."""
    path = Path(folder)
    file = file_in_the_way(path)
    if file is not None:
        inside = "" if file == path else f", inside {file}"
        raise ValueError(f"{what}: expected {expected}, got {path}{inside}, which is a file")


def refuse_files_in(flag: str, folder: str | os.PathLike[str], *, force: bool) -> None:
    """A ValueError naming ``flag`` when ``folder`` is a file (or lies inside one), or already holds
    files and ``force`` is not set: nothing a user made is written over without being asked."""
    path = Path(folder)
    refuse_file_in_the_way(flag, path, expected="a new or empty folder")
    if not force and path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{flag}: expected a new or empty folder, got {path}, which holds files "
                         "(pass --force to write into it)")


def refuse_existing(flag: str, path: str | os.PathLike[str], *, force: bool, force_flag: str = "--force") -> None:
    """A ValueError naming ``flag`` when the file ``path`` exists and ``force`` is not set: the one-file
    twin of :func:`refuse_files_in`."""
    if Path(path).exists() and not force:
        raise ValueError(f"{flag} {path}: exists; pass {force_flag} to replace it")


def write_atomic(out_path: Path, data: bytes, *, what: str = "the output model") -> None:
    """``data`` into ``out_path`` whole or not at all: written beside it under a hidden name, then renamed
    (interrupted, or on a full disk, a file there stays as it was, never one cut short; the hidden file is
    removed). OSError naming ``what`` and the path when that fails."""
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp makes the file private (0600); a model is read by the device's service user too.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out_path)
    except OSError as exc:
        raise OSError(f"cannot write {what} {out_path}: {exc.strerror or exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone once renamed


@contextlib.contextmanager
def user_names(names: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a ValueError whose message starts with a key of ``names`` (an options field such
    as ``per_word``, or a path the user gave) with that key replaced by its value (the flag the
    user typed, e.g. ``--per-word``, or ``--video PATH``)."""
    try:
        yield
    except ValueError as exc:
        text = str(exc)
        for name, shown in names.items():
            if text.startswith(f"{name}: "):
                raise ValueError(f"{shown}{text[len(name):]}") from None
        raise


class Stoppable(Protocol):
    """What a stop request ends: a pipeline, a recorder."""

    def stop(self) -> None: ...


class StopRequest:
    """What SIGINT, SIGTERM or SIGHUP asked: :attr:`requested`, and the ``stop()`` of the attached
    :class:`Stoppable`, called from the handler, which only sets flags: no I/O there (SIGHUP also points
    output at a terminal that hung up to /dev/null: :func:`leave_a_hung_up_terminal`)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._target: Stoppable | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def attach(self, target: Stoppable) -> None:
        """Stop ``target`` on the next signal (one that came before is seen in :attr:`requested`)."""
        self._target = target

    def on_signal(self, signum: int, frame: Any) -> None:
        if signum == SIGHUP:
            leave_a_hung_up_terminal()
        self._event.set()
        if self._target is not None:
            self._target.stop()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT, SIGTERM and SIGHUP (:data:`STOP_SIGNALS`) set the yielded :class:`StopRequest` instead of raising
    or ending the process, and the previous handlers come back on exit; SIGHUP that the command was started
    ignoring (``nohup``) stays ignored. Off the main thread (where Python cannot install handlers) the request is
    never set."""
    request = StopRequest()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, request.on_signal) for sig in _handled(STOP_SIGNALS)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def say(line: str) -> None:
    """``line`` on stderr; nothing when stderr was closed (``2>&-``): Python's ``sys.stderr`` is then None, and
    ``print(file=None)`` writes to stdout, into a command's JSON Lines events (``run``'s summary and ``--stats``
    object, ``demo``'s notes)."""
    if sys.stderr is not None:
        print(line, file=sys.stderr)


#: Our log lines on a terminal or in a file.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: In the journal, which stamps every line itself.
JOURNAL_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: syslog priorities (sd-daemon(3)) of logging's levels, highest first: under systemd a line on stderr that starts
#: with ``<N>`` is stored at priority N, the prefix removed (systemd.exec(5): SyslogLevelPrefix=, on by default).
SYSLOG_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
SYSLOG_DEBUG = 7


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two: the lower one's)."""
    return next((priority for level, priority in SYSLOG_PRIORITIES if levelno >= level), SYSLOG_DEBUG)


def stderr_is_the_journal() -> bool:
    """Whether stderr is the journal's stream: systemd sets ``JOURNAL_STREAM`` to its ``DEVICE:INODE``
    (systemd.exec(5)); a stderr redirected elsewhere by the service's command is not."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream or sys.stderr is None:
        return False
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stderr)
        return False
    return stream == f"{info.st_dev}:{info.st_ino}"


class JournalFormatter(logging.Formatter):
    """Each record prefixed with its syslog priority (``<4>`` for a warning): without it the journal stored every
    line of the service at "info" (``journalctl -p warning`` showed none of its warnings nor errors)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{super().format(record)}"


def journal_prefix(levelno: int) -> str:
    """``<N>``, the syslog priority of ``levelno``, where stderr is the journal (:func:`stderr_is_the_journal`);
    empty elsewhere."""
    return f"<{syslog_priority(levelno)}>" if stderr_is_the_journal() else ""


def say_error(prog: str, message: str) -> None:
    """``PROG: error: MESSAGE`` on stderr, at priority "err" in the journal (:class:`JournalFormatter`)."""
    say(f"{journal_prefix(logging.ERROR)}{prog}: error: {message}")


def _handled(signals: Sequence[int]) -> list[int]:
    """``signals`` but those of :data:`IGNORED_STAY_IGNORED` that are ignored now (``nohup`` ignores SIGHUP)."""
    return [sig for sig in signals if not (sig in IGNORED_STAY_IGNORED and signal.getsignal(sig) is signal.SIG_IGN)]


def leave_a_hung_up_terminal() -> None:
    """Point standard output and error at /dev/null where they are a terminal that hung up (SIGHUP from a closed
    window, an ssh connection that dropped: every write to it fails with EIO). What a stopping command says then
    (its summary, the training's last lines) goes nowhere instead of raising ``OSError`` in the middle of its
    stop. A terminal still there (``kill -HUP``), a file or a pipe is kept."""
    import errno
    import termios

    for fd in (1, 2):
        try:
            termios.tcgetattr(fd)
        except termios.error as exc:
            if not exc.args or exc.args[0] != errno.EIO:  # not a terminal (ENOTTY), closed (EBADF)
                continue
            try:
                null = os.open(os.devnull, os.O_WRONLY)
            except OSError:
                return
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
            os.close(null)


def _raise_interrupt(signum: int, frame: Any) -> None:
    if signum == SIGHUP:
        leave_a_hung_up_terminal()
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM (``kill``, ``timeout``, ``systemctl stop``) and SIGHUP (the terminal closed: its
    window, an ssh connection that dropped) raise KeyboardInterrupt as Ctrl-C does, instead of ending the process
    at once: the cleanup a command does when interrupted then runs (a staging folder or temporary file removed,
    the clips written so far listed) and it exits with 130. Only where the signal has its default action
    (``nohup``'s ignored SIGHUP stays ignored), on the main thread; a command that handles them itself
    (:func:`stop_on_signals`) installs its own handler inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [sig for sig in (signal.SIGTERM, SIGHUP) if sig is not None and signal.getsignal(sig) is signal.SIG_DFL]
    for sig in signals:
        signal.signal(sig, _raise_interrupt)
    try:
        yield
    finally:
        for sig in signals:
            signal.signal(sig, signal.SIG_DFL)


def _add_verbose(parser: argparse.ArgumentParser, dest: str) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, dest=dest,
                        help="debug logging, OpenCV's and FFmpeg's messages included (without it: info)")


def build_parser(argv: Sequence[str]) -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="edgesense", description="EdgeSense: audio+vision sensing on the edge.")
    parser.add_argument("--version", action="version", version=f"edgesense {__version__}")
    _add_verbose(parser, "verbose")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.command_parsers = sub.choices
    # Only the chosen command's module is imported (for --help, each one is listed by name).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_verbose(p, "command_verbose")  # -v also after the command: edgesense run ... -v
        if name == chosen:
            _load(module_name, name).add_arguments(p)
    return parser


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe (or socket) that nothing reads any more: its write end polls as an error."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stdout)
        return False


def run_main(prog: str, main: Callable[[], int | None], *, command: str | None = None) -> int:
    """``main()``'s exit code, with what a user can fix said in one line ``PROG: error: ...`` and exit
    code 2 instead of a traceback: a ``ValueError``, ``RuntimeError`` or ``OSError`` (bad input, a
    device fault), a desktop library that is not installed (the extra ``command`` needs) and running
    out of memory. A reader of its output that went away (``| head -1``) ends it quietly with 0. Ctrl-C,
    SIGTERM and SIGHUP exit with 130 (:func:`sigterm_interrupts`). The ``edgesense`` command and the scripts
    share it."""
    try:
        with sigterm_interrupts():
            return int(main() or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():  # another pipe: a fault to say
            say_error(prog, one_line_message(exc))
            return EXIT_USAGE
        # The reader of our output is gone (``edgesense inspect M | head -1``): it had all it wanted. Not an error;
        # stdout goes to /dev/null so that the interpreter's last flush does not raise again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModuleNotFoundError as exc:  # e.g. TensorFlow, imported when a desktop command gets to it
        error = _missing_extra(exc, command)
        if error is None:
            raise
        say_error(prog, str(error))
        return EXIT_USAGE
    except (ValueError, RuntimeError, OSError) as exc:
        say_error(prog, one_line_message(exc))
        return EXIT_USAGE
    except MemoryError as exc:  # e.g. numpy asked for a batch of 10**8 clips
        say_error(prog, f"out of memory ({exc or 'an allocation failed'}); ask for less (a smaller batch_size, "
                  "fewer items) or free memory")
        return EXIT_USAGE


def _run_command(argv: list[str]) -> int:
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, whose --help lists its flags
        parser.command_parsers.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    verbose = args.verbose + getattr(args, "command_verbose", 0)
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    if stderr_is_the_journal():  # a systemd service: each line at its own priority
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter(JOURNAL_LOG_FORMAT))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    if not args.command:  # one line, as for any other usage error; --help lists the commands
        say_error(parser.prog, f"expected a COMMAND, one of {', '.join(COMMANDS)} ({parser.prog} --help says what "
                  "each does)")
        return EXIT_USAGE
    return int(_load(COMMANDS[args.command][0], args.command).run(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    return run_main("edgesense", lambda: _run_command(argv), command=command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
