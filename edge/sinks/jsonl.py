"""JSON Lines events to a file or stdout."""

from __future__ import annotations

import codecs
import errno
import io
import logging
import os
import stat
import sys
import threading
from pathlib import Path
from typing import TextIO

from edgesense.pacing import Outage
from edgesense.sinks.base import STDOUT, Event, _ClosableSink, event_to_json

__all__ = ["JsonLinesSink"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- JSON Lines


def _is_utf8(encoding: object) -> bool:
    """Whether a text stream of ``encoding`` writes UTF-8, so any character (None or not a string: a stream
    without an encoding, such as ``io.StringIO``, which holds str as it is)."""
    if not isinstance(encoding, str):
        return True
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def _ends_in_a_partial_line(fd: int, path: Path) -> bool:
    """Whether the regular file open for appending at ``fd`` is not empty and its last byte is not a newline
    (False for anything else, or a file this process may not read)."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return False
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        info = os.fstat(reader)
        return stat.S_ISREG(info.st_mode) and info.st_size > 0 and os.pread(reader, 1, info.st_size - 1) != b"\n"
    except OSError:
        return False
    finally:
        os.close(reader)


def _open_for_appending(path: Path) -> int:
    """``path`` opened (created) for appending, in blocking mode. O_NONBLOCK while opening: a FIFO with no reader
    is ENXIO there, where a plain open would wait forever; then blocking, so a slow FIFO reader slows the loop
    down and loses no event."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o644)
    os.set_blocking(fd, True)
    return fd


class JsonLinesSink(_ClosableSink):
    """One JSON object per line to stdout (``"-"``), a file path (appended to), or an open text stream.

    Each event is serialised first, then written with a single write (one
    ``os.write`` of the whole line for files opened here, under a lock) and
    flushed, so a reader never sees a torn line, even with several writers
    appending to the same file. A closed pipe (``edgesense run | head``) turns
    the sink off with one warning instead of stopping the device loop. Any other
    write error (disk full, I/O error) is counted in ``lost_events`` and later
    events are tried again: each such outage is one warning when it starts and one
    when writing works again (with the events it lost), however long it lasts and
    however many come in a run. Should the disk fill in the
    middle of a line, the part written stays as a line of its own: the next event
    starts on a new line; so does the first event appended to a file that an earlier run
    left ending in a partial line (a power cut or a kill mid-write), with a warning. A FIFO
    (named pipe) needs its reader running when the
    sink opens it (``ValueError`` otherwise, instead of waiting for one forever).
    A file opened here follows its path: once the file has been moved away or removed
    (logrotate without ``copytruncate``, an ``rm``), the next event opens a new file at the
    path (created, one info line) instead of going on into the moved file, or into a removed
    one where every event was lost.
    Files opened here are written in UTF-8; a text stream (stdout) whose encoding is
    not UTF-8 (a Latin-1 locale) gets characters outside ASCII as ``\\uXXXX`` escapes,
    the same JSON, instead of losing the events that hold one (a place of your own named
    ``北京``) or writing bytes that are not UTF-8.
    """

    def __init__(self, target: str | os.PathLike[str] | TextIO = STDOUT) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None  # a regular file opened here: followed by its path (rotation)
        self._file_id: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file open at self._fd
        self._stream: TextIO | None = None
        self._broken = False
        self._torn = False  # a failed write left part of a line in the file: the next write ends it first
        self.lines_written = 0
        self._lost = Outage(logger)  # events that could not be written (not those after the reader closed a pipe)
        self._ascii_only = False  # a text stream that is not UTF-8: escape what lies outside ASCII
        if isinstance(target, (str, os.PathLike)) and os.fspath(target) == "":
            raise ValueError("events path '': expected a JSON Lines file or -, got an empty path")
        if isinstance(target, (str, os.PathLike)) and os.fspath(target) == STDOUT:
            if sys.stdout is None:  # started with standard output closed (e.g. `edgesense run ... >&-`)
                raise ValueError("events -: expected an open standard output, found it closed; name a file instead")
            self._stream, self.name = sys.stdout, "<stdout>"
        elif isinstance(target, (str, os.PathLike)):
            path = Path(target)
            if path.is_dir():
                raise ValueError(f"{path}: is a folder; expected a JSON Lines file or -")
            if path.parent and not path.parent.is_dir():
                raise ValueError(f"{path}: the folder for the events file does not exist")
            try:
                self._fd = _open_for_appending(path)
            except OSError as exc:  # no permission, a read-only file system, ...
                if exc.errno == errno.ENXIO:
                    raise ValueError(f"{path}: expected a file, or a FIFO with its reader running; got a FIFO "
                                     "that no process reads (start the reader first)") from None
                raise ValueError(f"{path}: cannot open the events file for appending "
                                 f"({exc.strerror or exc})") from None
            self.name = str(path)
            info = os.fstat(self._fd)
            if stat.S_ISREG(info.st_mode):  # not a FIFO nor a device (/dev/null): those are not rotated
                self._path, self._file_id = path, (info.st_dev, info.st_ino)
            if _ends_in_a_partial_line(self._fd, path):  # a power cut or a kill mid-line in an earlier run
                self._torn = True
                logger.warning("events: %s ends in a partial line (an earlier run cut off mid-line?); new events "
                               "start on a line of their own", self.name)
        elif isinstance(target, (io.RawIOBase, io.BufferedIOBase)):  # its write() refuses str: every event lost
            raise ValueError(f"target: expected '-', a path or a text stream, got a binary stream {target!r} (open "
                             f"it in text mode)")
        elif hasattr(target, "write"):
            self._stream, self.name = target, getattr(target, "name", repr(target))
        else:
            raise ValueError(f"target: expected '-', a path or a text stream, got {target!r}")
        if self._stream is not None:
            self._ascii_only = not _is_utf8(getattr(self._stream, "encoding", None))

    def emit(self, event: Event) -> None:
        self._check_open()
        line = event_to_json(event, ascii_only=self._ascii_only) + "\n"
        with self._lock:
            if self._broken:
                return
            try:
                if self._fd is not None:
                    self._follow_path()
                    data = (b"\n" if self._torn else b"") + line.encode("utf-8")
                    size = len(data)
                    try:
                        while data:  # os.write on a regular file writes all at once; loop for the odd case
                            data = data[os.write(self._fd, data):]
                    finally:
                        if data and len(data) < size:  # the disk filled mid-line: a fragment is in the file
                            self._torn = True
                        elif not data:
                            self._torn = False
                else:
                    assert self._stream is not None
                    self._stream.write(line)
                    self._stream.flush()
            except BrokenPipeError:
                self._broken = True
                logger.warning("events: %s was closed by its reader; no more events will be written", self.name)
                return
            except OSError as exc:  # disk full, I/O error: this event is lost, the next ones are tried
                self._lost.failed("events: cannot write to %s (%s); events are lost while this lasts", self.name, exc)
                return
            self.lines_written += 1
            self._lost.succeeded("events: writing to %s again; %d event(s) lost while it failed", self.name)

    def _follow_path(self) -> None:
        """Reopen the file at the path when the one open was moved away or removed (under the lock). ``OSError``
        when the new one cannot be opened: this event is lost (and counted), the next one tries again."""
        if self._path is None:
            return
        try:
            info = os.stat(self._path)
            if (info.st_dev, info.st_ino) == self._file_id:
                return
        except FileNotFoundError:
            pass
        except OSError:  # cannot tell (a folder without search permission now): write where we were
            return
        fd = _open_for_appending(self._path)
        assert self._fd is not None
        os.close(self._fd)
        info = os.fstat(fd)
        self._fd, self._file_id = fd, (info.st_dev, info.st_ino)
        self._torn = _ends_in_a_partial_line(fd, self._path)
        logger.info("events: %s was moved away or removed (rotated?); writing on in a new file there", self.name)

    @property
    def lost_events(self) -> int:
        """Events that could not be written (not those after the reader closed a pipe)."""
        return self._lost.failures

    def flush(self) -> None:
        with self._lock:
            if self._stream is not None and not self._broken:
                try:
                    self._stream.flush()
                except BrokenPipeError:
                    self._broken = True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is not None:
                if self._torn:  # end the fragment a full disk left, if there is room now
                    try:
                        os.write(self._fd, b"\n")
                    except OSError:
                        pass
                os.close(self._fd)
                self._fd = None
            # Streams passed in (stdout included) belong to the caller: flushed, not closed.
            elif self._stream is not None and not self._broken:
                try:
                    self._stream.flush()
                except (BrokenPipeError, ValueError):
                    pass
