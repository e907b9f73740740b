"""A bounded on-disk FIFO of events for at-least-once delivery (SQLite, stdlib only).

:class:`edgesense.sinks.mqtt.MqttSink` with ``spool_dir`` writes every event here *before*
it publishes it, and removes it only when the broker has acknowledged it (QoS 1
``PUBACK``). Whatever is still here when the broker is unreachable, or when
EdgeSense is killed, is published again, oldest first, on the next (re)connection
or by the next process that opens the same folder. Delivery is therefore
*at least once*: a message whose acknowledgement was lost is sent twice.

Storage: ``DIR/spool.sqlite3`` in WAL mode, one row per event (``seq``, ``kind``,
``payload``); ``seq`` only grows, so it is the delivery order. ``DIR/spool.lock``
is held with ``flock`` while a spool is open: a second process (or a second
:class:`EventSpool` in the same process) on the same folder gets a
``RuntimeError`` instead of interleaving its events. The lock dies with the
process, so a killed EdgeSense never leaves a stale lock behind.

Durability (``SpoolOptions.sync``, SQLite's ``synchronous`` pragma):

* ``"full"`` (default): every append is fsync'ed before :meth:`EventSpool.append`
  returns. An event survives a process kill *and* a power cut. Removals (after
  acknowledgement) are written without an fsync of their own (``synchronous=NORMAL`` for
  that transaction): they survive a process kill, the next append's fsync makes them
  durable too, and losing one to a power cut only means a duplicate. One fsync per event
  (an fsync per acknowledgement as well doubled what a live device's SD card took).
* ``"normal"``: the WAL is fsync'ed at checkpoints only. Survives a process kill
  (the OS has the data), may lose the last events on a power cut; far fewer
  flash writes for SD cards.
* ``"off"``: no fsync at all (tests, tmpfs).

Bounds: at most ``max_events`` rows and ``max_bytes`` of payload. When an append
would exceed either, the **oldest** events are dropped and counted in
:attr:`EventSpool.dropped` (kept in the database, so the count survives
restarts), with a warning: at once for the first drop, then at most one every
:data:`DROP_WARNING_INTERVAL_S` saying how many were dropped since the last one (a
spool that stays full through a long outage drops at every event: one line each
filled the SD card's logs), and the rest when the spool is closed. A new event larger
than ``max_bytes`` on its own is dropped on arrival (the stored ones are kept), counted
the same, with a warning of its own saying so, paced the same way. An unreadable
database file (corrupted by a failing card) is renamed ``spool.sqlite3.corrupt-<unix time>`` (``-2``, ``-3``,
... added when one set aside earlier has that name: a device without a real-time clock boots at the same wall
time again and again; it is never written over) and a new, empty one is started, with an error logged: the
device keeps running. A readable SQLite file that is not a spool (other tables, columns or column types, views,
triggers or indexes: another program's) is a ``ValueError`` and is left as it is. In a spool, a stored row whose
kind or payload is not text (a damaged or edited file) is deleted at open, counted as dropped, with an error
logged (it was published as ``"None"`` or ``"b'...'"``); a stored size that is not its payload's is corrected
(a wrong one emptied or overfilled the spool's bounds).
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from edgesense.pacing import Paced
from edgesense.schema.validate import is_int, is_positive, require

__all__ = ["SYNC_MODES", "SpoolOptions", "SpooledEvent", "EventSpool", "DeliveryOptions", "SpoolDelivery"]

logger = logging.getLogger(__name__)


SYNC_MODES = ("full", "normal", "off")
DB_NAME = "spool.sqlite3"
LOCK_NAME = "spool.lock"
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_BUSY_TIMEOUT_S = 5.0
#: While a full spool keeps dropping events, at most one warning per this many seconds (the first at once).
DROP_WARNING_INTERVAL_S = 600.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
    "payload TEXT NOT NULL, size_bytes INTEGER NOT NULL, created_s REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
#: The tables of a spool database and their columns (sqlite_sequence: SQLite's, for AUTOINCREMENT).
_TABLES = {"events": {"seq", "kind", "payload", "size_bytes", "created_s"}, "meta": {"key", "value"},
           "sqlite_sequence": set()}
#: Column -> (declared type, NOT NULL, primary key) as ``_SCHEMA`` makes them (``PRAGMA table_info``).
_COLUMNS = {"events": {"seq": ("INTEGER", False, True), "kind": ("TEXT", True, False),
                       "payload": ("TEXT", True, False), "size_bytes": ("INTEGER", True, False),
                       "created_s": ("REAL", True, False)},
            "meta": {"key": ("TEXT", False, True), "value": ("INTEGER", True, False)}}
#: Stored rows that are no event: SQLite keeps a blob or a number in a TEXT column as it is.
_NOT_AN_EVENT = "typeof(kind) != 'text' OR kind = '' OR typeof(payload) != 'text'"


def _declaration(column: tuple[str, bool, bool]) -> str:
    """How a column (declared type, NOT NULL, primary key) reads in a CREATE TABLE."""
    declared, notnull, pk = column
    return " ".join([declared or "(no type)", *(["NOT NULL"] if notnull else []), *(["PRIMARY KEY"] if pk else [])])


class _NotASpool(Exception):
    """A readable SQLite database that is not a spool (someone else's file): left untouched."""


@dataclass(frozen=True, kw_only=True)
class SpoolOptions:
    """Bounds and durability of an :class:`EventSpool` (see the module docstring)."""

    max_events: int = DEFAULT_MAX_EVENTS
    max_bytes: int = DEFAULT_MAX_BYTES
    sync: str = "full"

    def __post_init__(self) -> None:
        require(is_int(self.max_events) and self.max_events >= 1, "max_events", "an integer >= 1", self.max_events)
        require(is_int(self.max_bytes) and self.max_bytes >= 1, "max_bytes", "an integer >= 1", self.max_bytes)
        require(self.sync in SYNC_MODES, "sync", f"one of {', '.join(SYNC_MODES)}", self.sync)


@dataclass(frozen=True)
class SpooledEvent:
    """One stored event: ``seq`` (delivery order), ``kind`` (the event type), ``payload`` (JSON text)."""

    seq: int
    kind: str
    payload: str


class EventSpool:
    """The spool in folder ``directory`` (created if missing). Thread-safe; close it when done.

    ``ValueError`` when ``directory`` is not usable as a folder or holds another program's
    ``spool.sqlite3``; ``RuntimeError``
    when another open spool holds it or SQLite cannot open it.
    """

    def __init__(self, directory: str | os.PathLike[str], options: SpoolOptions = SpoolOptions()) -> None:
        require(isinstance(options, SpoolOptions), "options", "SpoolOptions", options)
        self.options = options
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"spool_dir: expected a folder, got {str(self.directory)!r} (a file)")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ValueError(f"spool_dir: cannot use {str(self.directory)!r} as the spool folder: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise RuntimeError(f"spool_dir: expected a folder no other spool holds, got {str(self.directory)!r}: "
                               f"it is in use by another EdgeSense process (or another sink in this one)") from exc
        self._lock = threading.Lock()
        self._closed = False
        self.path = self.directory / DB_NAME
        try:
            self._db = self._open()
        except _NotASpool as exc:
            self._release_lock()
            raise ValueError(f"spool_dir: expected {self.path} to be an EdgeSense spool, got a SQLite database "
                             f"with {exc}; move that file away or name another folder") from None
        except sqlite3.OperationalError as exc:  # locked, unreadable folder, ...: not the file's fault
            self._release_lock()
            raise RuntimeError(f"spool: cannot open {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed": a corrupt file
            self._quarantine(exc)
            try:
                self._db = self._open()
            except sqlite3.Error as again:
                self._release_lock()
                raise RuntimeError(f"spool: cannot open {self.path}: {again}") from again
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM events").fetchone()
        self._count, self._bytes = int(count), int(size)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        self._dropped = int(row[0]) if row else 0
        self._dropped_at_open = self._dropped
        self._drops_unsaid = 0  # oldest events dropped (the spool was full) since the last warning
        self._too_large_unsaid = 0  # new events dropped on arrival (larger than max_bytes) since the last warning
        self._too_large_largest = 0  # the largest of those, in bytes
        self._drop_warned_s: dict[str, float] = {}  # time.monotonic() of the last warning, by kind
        if self._count:
            logger.info("spool: %d undelivered events in %s will be sent first", self._count, self.directory)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            self._check_tables(db)  # before anything is written to it
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.options.sync.upper()}")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("SELECT COUNT(*) FROM events").fetchone()
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            self._repair_rows(db)
        except (sqlite3.Error, _NotASpool):
            db.close()
            raise
        return db

    @staticmethod
    def _check_tables(db: sqlite3.Connection) -> None:
        """``_NotASpool`` when the database holds tables, columns, views, triggers or indexes that a spool does not."""
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        foreign = [name for name in tables if name not in _TABLES]
        if foreign:
            raise _NotASpool(f"the table(s) {', '.join(foreign)}")
        for name in tables:
            columns = {row[1]: row for row in db.execute(f"PRAGMA table_info({name})")}
            if not _TABLES[name] <= set(columns):
                missing = ", ".join(sorted(_TABLES[name] - set(columns)))
                raise _NotASpool(f"a table {name} that has no column {missing}")
            for column, (_, _, declared, notnull, _, pk) in columns.items():
                want = _COLUMNS.get(name, {}).get(column)
                got = (str(declared).upper(), bool(notnull), bool(pk))
                if name in _COLUMNS and got != want:
                    raise _NotASpool(f"a table {name} whose column {column} is {_declaration(got)}, not "
                                     f"{_declaration(want)}" if want is not None
                                     else f"a table {name} with a column {column}, which a spool has not")
        others = [f"{kind} {name}" for kind, name in db.execute(
            "SELECT type, name FROM sqlite_master WHERE type != 'table' AND name NOT LIKE 'sqlite_autoindex_%' "
            "ORDER BY type, name")]
        if others:
            raise _NotASpool(f"the {', '.join(others)}")

    def _repair_rows(self, db: sqlite3.Connection) -> None:
        """Delete the stored rows that are no event (counted as dropped) and correct stored sizes, saying so."""
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
            if row is not None and not (is_int(row[0]) and row[0] >= 0):
                logger.error("spool: %s: the count of dropped events is %r, not a count; counting from 0",
                             self.path, row[0])
                db.execute("UPDATE meta SET value = 0 WHERE key = 'dropped'")
            damaged = db.execute(f"SELECT COUNT(*) FROM events WHERE {_NOT_AN_EVENT}").fetchone()[0]  # noqa: S608
            if damaged:
                logger.error("spool: %s: dropped %d stored row(s) whose kind or payload is not text (a damaged or "
                             "edited file): they are no event to publish", self.path, damaged)
                db.execute(f"DELETE FROM events WHERE {_NOT_AN_EVENT}")  # noqa: S608
                db.execute("INSERT INTO meta (key, value) VALUES ('dropped', ?) ON CONFLICT(key) "
                           "DO UPDATE SET value = value + excluded.value", (damaged,))
            resized = db.execute("UPDATE events SET size_bytes = length(CAST(payload AS BLOB)) "
                                 "WHERE size_bytes IS NOT length(CAST(payload AS BLOB))").rowcount
            if resized:
                logger.warning("spool: %s: corrected the stored size of %d event(s) (not their payload's)",
                               self.path, resized)
            db.execute("COMMIT")
        except sqlite3.Error:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def _quarantine(self, exc: Exception) -> None:
        # The wall clock only names the file: a device without a real-time clock boots at the time fake-hwclock
        # saved (or in 1970), so the name of an earlier one set aside may come again; it is never written over.
        stem = f"{DB_NAME}.corrupt-{int(time.time())}"
        target = self.path.with_name(stem)
        n = 1
        while any(Path(f"{target}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
            n += 1
            target = self.path.with_name(f"{stem}-{n}")
        logger.error("spool: %s is unreadable (%s); moved it to %s and starting an empty spool", self.path, exc,
                     target.name)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(Path(f"{target}{suffix}"))

    def _release_lock(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(self._lock_fd)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Payload bytes stored."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Events dropped to stay within the bounds, over the spool's whole life."""
        return self._dropped

    @property
    def dropped_since_open(self) -> int:
        return self._dropped - self._dropped_at_open

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("spool: used after close()")

    def read(self, *, after_seq: int = 0, limit: int | None = None) -> list[SpooledEvent]:
        """Stored events with ``seq > after_seq``, oldest first (at most ``limit``)."""
        require(limit is None or (is_int(limit) and limit >= 0), "limit", "None or an integer >= 0", limit)
        with self._lock:
            self._check_open()
            rows = self._db.execute("SELECT seq, kind, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (int(after_seq), -1 if limit is None else limit)).fetchall()
        return [SpooledEvent(int(seq), str(kind), str(payload)) for seq, kind, payload in rows]

    def first_seq(self) -> int | None:
        """The oldest stored ``seq`` (None when empty)."""
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT MIN(seq) FROM events").fetchone()
        return None if row[0] is None else int(row[0])

    # ------------------------------------------------------------------ changes

    def append(self, kind: str, payload: str) -> int:
        """Store one event durably (per ``sync``); returns its ``seq``. Drops the oldest when full.

        ``RuntimeError`` when SQLite cannot write (disk full, I/O error).
        """
        require(isinstance(kind, str) and bool(kind), "kind", "a non-empty string", kind)
        require(isinstance(payload, str), "payload", "a string", payload)
        size = len(payload.encode("utf-8"))
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if size > self.options.max_bytes:
                    dropped = 1  # larger than the whole spool: dropped on arrival, the others kept
                    seq = -1
                else:
                    dropped = self._make_room(size)
                    cur = self._db.execute("INSERT INTO events (kind, payload, size_bytes, created_s) "
                                           "VALUES (?, ?, ?, ?)", (kind, payload, size, time.time()))
                    assert cur.lastrowid is not None  # an INSERT sets it
                    seq = cur.lastrowid
                if dropped:
                    self._db.execute("INSERT INTO meta (key, value) VALUES ('dropped', ?) ON CONFLICT(key) "
                                     "DO UPDATE SET value = value + excluded.value", (dropped,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._resync()
                raise RuntimeError(f"spool: cannot store an event in {self.path}: {exc}") from exc
            if seq > 0:
                self._count += 1
                self._bytes += size
            if dropped:
                self._dropped += dropped
                if seq < 0:  # the new event itself, not the oldest: its own warning
                    self._too_large_unsaid += 1
                    self._too_large_largest = max(self._too_large_largest, size)
                else:
                    self._drops_unsaid += dropped
                now = time.monotonic()
                kind = "too_large" if seq < 0 else "full"
                last = self._drop_warned_s.get(kind)
                if last is None or now - last >= DROP_WARNING_INTERVAL_S:
                    self._drop_warned_s[kind] = now
                    self._say_drops()
        return seq

    def _say_drops(self) -> None:
        """Warn about the events dropped since the last warning (under the lock)."""
        if self._drops_unsaid:
            logger.warning("spool: full (max_events=%d, max_bytes=%d); dropped the %d oldest undelivered event(s) "
                           "since the last warning, %d dropped in all (said at most every %g s while it lasts)",
                           self.options.max_events, self.options.max_bytes, self._drops_unsaid, self._dropped,
                           DROP_WARNING_INTERVAL_S)
            self._drops_unsaid = 0
        if self._too_large_unsaid:
            logger.warning("spool: %d new event(s) larger than the whole spool (max_bytes=%d, the largest %d bytes) "
                           "dropped on arrival since the last warning, the stored ones kept; %d dropped in all "
                           "(said at most every %g s)", self._too_large_unsaid, self.options.max_bytes,
                           self._too_large_largest, self._dropped, DROP_WARNING_INTERVAL_S)
            self._too_large_unsaid = 0
            self._too_large_largest = 0

    def _make_room(self, size: int) -> int:
        """Delete the oldest rows until one more event of ``size`` bytes fits (inside a transaction)."""
        excess_events = self._count + 1 - self.options.max_events
        excess_bytes = self._bytes + size - self.options.max_bytes
        if excess_events <= 0 and excess_bytes <= 0:
            return 0
        dropped = 0
        freed = 0
        for seq, row_size in self._db.execute("SELECT seq, size_bytes FROM events ORDER BY seq"):
            if dropped >= excess_events and freed >= excess_bytes:
                break
            dropped += 1
            freed += int(row_size)
            last = int(seq)
        if dropped:
            self._db.execute("DELETE FROM events WHERE seq <= ?", (last,))
            self._count -= dropped
            self._bytes -= freed
        return dropped

    def remove(self, seqs: Any) -> int:
        """Delete delivered events by ``seq`` (unknown ones are ignored); returns how many were deleted."""
        seqs = sorted({int(s) for s in seqs})
        if not seqs:
            return 0
        with self._lock:
            self._check_open()
            relaxed = self.options.sync == "full"  # a removal is not fsync'ed (the module docstring says why)
            try:
                if relaxed:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("BEGIN IMMEDIATE")
                placeholders = ",".join("?" * len(seqs))
                row = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM events "  # noqa: S608
                                       f"WHERE seq IN ({placeholders})", seqs).fetchone()
                self._db.execute(f"DELETE FROM events WHERE seq IN ({placeholders})", seqs)  # noqa: S608
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise RuntimeError(f"spool: cannot remove delivered events from {self.path}: {exc}") from exc
            finally:
                if relaxed:  # appends are fsync'ed again; the next one's fsync takes this removal along
                    self._restore_sync()
            removed, size = int(row[0]), int(row[1])
            self._count -= removed
            self._bytes -= size
        return removed

    def _restore_sync(self) -> None:
        """Back to ``options.sync`` after a removal; ``RuntimeError`` (the spool closed) rather than go on with
        appends that are not fsync'ed."""
        try:
            self._db.execute(f"PRAGMA synchronous={self.options.sync.upper()}")
        except sqlite3.Error as exc:
            self._closed = True
            self._db.close()
            self._release_lock()
            raise RuntimeError(f"spool: cannot set synchronous={self.options.sync} on {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _resync(self) -> None:
        try:
            count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM events").fetchone()
            self._count, self._bytes = int(count), int(size)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """Close the database and release the folder (idempotent). Stored events stay for the next process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._drops_unsaid or self._too_large_unsaid:
                self._say_drops()
            try:
                self._db.close()
            finally:
                self._release_lock()
        if self._count:
            logger.info("spool: %d undelivered events stay in %s for the next run", self._count, self.directory)

    def __enter__(self) -> "EventSpool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventSpool({str(self.directory)!r}, {self._count} events, {self._bytes} bytes)"


# --------------------------------------------------------------------------- delivery


PublishFn = Callable[[SpooledEvent], Sequence[int]]


@dataclass(frozen=True, kw_only=True)
class DeliveryOptions:
    """How :class:`SpoolDelivery` feeds a spool to a publisher.

    ``window_events``: events handed to the publisher and not yet acknowledged, at
    most (bounds the client library's memory when a long backlog is replayed).
    ``resend_after_s``: after a reconnection, how long to wait for the client
    library's own resend of in-flight messages before publishing them again from
    the spool; and after the broker refused an event (MQTT 5: its ACL), how long
    to wait before offering it again. ``idle_wait_s``: how long the worker waits before it tries again after a
    step that failed (a disk error, a publisher that raised). Without news (a new event, an answer, a
    (re)connection) and without a failure it sleeps until its next due time (a resend, a refused event's next
    offer), or until news comes: an idle device's worker never polls (it woke every ``idle_wait_s``, and queried
    the spool at each wake while connected, for as long as the device ran).
    """

    window_events: int = 16
    resend_after_s: float = 10.0
    idle_wait_s: float = 0.5

    def __post_init__(self) -> None:
        require(is_int(self.window_events) and self.window_events >= 1, "window_events", "an integer >= 1",
                 self.window_events)
        for name in ("resend_after_s", "idle_wait_s"):  # waited for: inf was an OverflowError in the worker
            value = getattr(self, name)
            require(is_positive(value) and value <= threading.TIMEOUT_MAX, name,
                    f"a positive number up to {threading.TIMEOUT_MAX:g} (threading's longest wait)", value)


class SpoolDelivery:
    """A worker thread that publishes a spool's events in ``seq`` order and removes acknowledged ones.

    The publisher side reports with :meth:`connected` (after every CONNACK),
    :meth:`disconnected`, :meth:`acknowledged` (a message id was acknowledged) and
    :meth:`refused` (the broker answered a message id with a refusal, e.g. MQTT 5's "Not authorized");
    those calls only queue a note and return, so they are safe from a client
    library's network thread while it holds its own locks. ``publish(event)``
    (called on the worker thread only) queues the event's messages and returns
    their message ids, or raises ``RuntimeError`` to be retried later.

    Order: events are published oldest first. After a reconnection, events that
    were in flight are resent by the client library (MQTT DUP); nothing newer is
    published until they are acknowledged, so the broker sees the spool's order.
    If they are not acknowledged within ``resend_after_s`` the worker publishes
    them again from the spool (a possible duplicate, never a loss).

    Refusals: an event with a refused message stays in the spool; the refused events are
    offered again together, in ``seq`` order, ``resend_after_s`` after a refusal, for as
    long as the broker refuses them (never a busy loop); the events after them go on
    meanwhile (a broker whose ACL refuses one event type still gets the others), so a
    refused event reaches a broker that starts accepting it after later ones, but in its
    order among the refused.
    """

    def __init__(self, spool: EventSpool, publish: PublishFn, options: DeliveryOptions = DeliveryOptions()) -> None:
        require(isinstance(spool, EventSpool), "spool", "an EventSpool", spool)
        require(callable(publish), "publish", "a callable", publish)
        require(isinstance(options, DeliveryOptions), "options", "DeliveryOptions", options)
        self.spool = spool
        self.options = options
        self._publish = publish
        self._cond = threading.Condition()
        self._acks: collections.deque[tuple[int, bool]] = collections.deque()  # (message id, accepted)
        self._online = False
        self._generation = 0
        self._wake = False
        self._stop = False
        self._delivered = threading.Condition()
        # worker-thread state
        self._inflight: dict[int, int] = {}  # message id -> seq
        self._parts: dict[int, int] = {}  # seq -> messages not acknowledged yet
        self._sent_seq = 0
        self._seen_generation = 0
        self._stale_since: float | None = None
        self._refused: set[int] = set()  # seqs the broker refused, to be offered again together
        self._failed_steps = Paced()
        self._refused_due: float | None = None  # when (None: none refused)
        self.delivered = 0  #: events acknowledged and removed
        self._thread = threading.Thread(target=self._loop, name="edgesense-spool", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- notes from other threads

    def _note(self, **changes: Any) -> None:
        with self._cond:
            for name, value in changes.items():
                setattr(self, name, value)
            self._wake = True
            self._cond.notify()

    def connected(self) -> None:
        with self._cond:
            self._online = True
            self._generation += 1
            self._wake = True
            self._cond.notify()

    def disconnected(self) -> None:
        self._note(_online=False)

    def acknowledged(self, mid: int) -> None:
        with self._cond:
            self._acks.append((int(mid), True))
            self._cond.notify()

    def refused(self, mid: int) -> None:
        """The broker answered message ``mid`` with a refusal: its event stays spooled, to be offered again."""
        with self._cond:
            self._acks.append((int(mid), False))
            self._cond.notify()

    def wake(self) -> None:
        """New events were appended: publish them now."""
        self._note()

    def wait_delivered(self, seq: int, timeout_s: float) -> bool:
        """Wait until every event up to ``seq`` is acknowledged (or dropped); False after ``timeout_s``."""
        def done() -> bool:
            first = self.spool.first_seq()
            return first is None or first > seq

        with self._delivered:
            return self._delivered.wait_for(done, timeout=timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._note(_stop=True)
        self._thread.join(timeout_s)

    # ---------------------------------------------------------------- the worker

    def _loop(self) -> None:
        failed = False
        while True:
            with self._cond:
                if not (self._acks or self._wake or self._stop):
                    self._cond.wait(self.options.idle_wait_s if failed else self._until_due_s())
                if self._stop:
                    return
                acks = list(self._acks)
                self._acks.clear()
                self._wake = False
                online, generation = self._online, self._generation
            try:
                self._step(acks, online, generation)
                failed = False
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a bad moment (disk, broker)
                # a failing card fails every step: not a line each time
                self._failed_steps.say(logger, logging.WARNING, "spool: delivery step failed: %s; retrying", exc,
                                       what="failed steps")
                failed = True  # tried again after idle_wait_s (or news)

    def _until_due_s(self) -> float | None:
        """Seconds until the worker has something to do without news: the resend of in-flight events after a
        reconnection, the next offer of refused ones (``None``: nothing; it waits for news). A due time already
        past is one the last step could not act on (offline, a full window): news ends that wait (a
        (re)connection, an answer), never a poll."""
        now = time.monotonic()
        due = [at for at in (None if self._stale_since is None else self._stale_since + self.options.resend_after_s,
                             self._refused_due) if at is not None and at > now]
        return min(due) - now if due else None

    def _step(self, acks: list[tuple[int, bool]], online: bool, generation: int) -> None:
        done = []
        now = time.monotonic()
        for mid, accepted in acks:
            seq = self._inflight.pop(mid, None)
            if seq is None or seq not in self._parts:
                continue
            if not accepted:  # kept, offered again later; its other messages' answers are let go
                del self._parts[seq]
                self._refused.add(seq)
                if self._refused_due is None:
                    self._refused_due = now + self.options.resend_after_s
                continue
            self._parts[seq] -= 1
            if self._parts[seq] <= 0:
                del self._parts[seq]
                done.append(seq)
        if done:
            self.spool.remove(done)
            self.delivered += len(done)
            with self._delivered:
                self._delivered.notify_all()
        if generation != self._seen_generation:
            self._seen_generation = generation
            # In-flight messages are resent by the client library after a reconnection: wait for them.
            self._stale_since = now if self._parts else None
        if self._stale_since is not None and not self._parts:
            self._stale_since = None
        if self._stale_since is not None and online and now - self._stale_since >= self.options.resend_after_s:
            logger.warning("spool: %d in-flight events not acknowledged %.0f s after reconnecting; publishing them "
                           "again from the spool", len(self._parts), self.options.resend_after_s)
            self._inflight.clear()
            self._parts.clear()
            self._sent_seq = 0
            self._stale_since = None
        if not online or self._stale_since is not None:
            return
        room = self.options.window_events - len(self._parts)
        if self._refused_due is not None and self._refused_due <= now and room > 0:
            again = sorted(self._refused)[:room]
            self._refused.difference_update(again)
            self._refused_due = now + self.options.resend_after_s if self._refused else None
            logger.debug("spool: offering %d events the broker refused again", len(again))
            for seq in again:
                found = self.spool.read(after_seq=seq - 1, limit=1)
                if found and found[0].seq == seq:  # not dropped meanwhile (a full spool)
                    self._offer(found[0])
                    room -= 1
        # Read on past the events that wait for their turn (refused, in flight): no news may come before the refused
        # are offered again (resend_after_s), and the events after them must not wait for that.
        while room > 0:
            limit = room
            events = self.spool.read(after_seq=self._sent_seq, limit=limit)
            for event in events:
                if event.seq not in self._refused and event.seq not in self._parts:  # those wait for their turn
                    self._offer(event)  # raises (a publisher's fault): offered again at the next step
                    room -= 1
                self._sent_seq = event.seq
            if len(events) < limit:  # the spool's end
                return

    def _offer(self, event: SpooledEvent) -> None:
        mids = list(self._publish(event))
        for mid in mids:
            self._inflight[int(mid)] = event.seq
        if mids:
            self._parts[event.seq] = len(mids)
