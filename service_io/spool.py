"""A bounded FIFO on disk that survives crashes: the one durability mechanism of gateway, bridge and alerts.

SQLite in WAL mode (stdlib, crash-safe): a committed `put` survives `kill -9` of the process.
Items keep their order; the oldest are dropped (and counted) only when `max_items` is reached, except that an
item may be *expendable*: when the spool is full, expendable items go first (oldest first, counted apart in
`dropped_expendable`), and only once none is left the oldest of the rest — so items that must not be lost
(the bridge's minutes, events, status, alerts) are never pushed out by ones that may be (its live points).
An item may carry an expiry time (Unix s): a phone nudge that could not be sent in time is
dropped rather than delivered late, a live point its retention policy would delete is not sent (`expire`).
A small key-value table (`meta`) is written in the same transaction as the items, so a service's state and
what it decided to send never disagree.
Pages freed by deletes go back to the file system once there are RECLAIM_PAGES of them (SQLite's
incremental auto-vacuum), so a spool that filled during an outage shrinks again when it drains.
A file SQLite cannot open or write (a full disk, no permission) raises SpoolError: one line naming
the file, and nothing half-written. A file that is no database or a damaged one (an SD card's bad sector, a bad
restore) is moved aside, said in one line, and a new spool opened in its place: what it held cannot be read anyway, and
refusing it stopped a service at every start (the alert service sent nothing until someone moved the file by hand).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

# (key, body[, expires_at_s[, expendable]])
Item = tuple[str, bytes] | tuple[str, bytes, float | None] | tuple[str, bytes, float | None, bool]
Row = tuple[int, str, bytes, float | None]  # (id, key, body, expires_at_s), as peek() gives them
RECLAIM_PAGES = 256  # 1 MiB of 4 KiB pages: less is not worth a checkpoint
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL

log = logging.getLogger("posture.spool")
WRITE_BACK_RETRY_S = 60.0  # a deleted spool that could not be written back (a full disk) is tried again after this


def _journal(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against process crashes


class SpoolError(OSError):
    """The spool file could not be opened or written (disk full, read-only, not a database)."""


UNREADABLE = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)  # the file's bytes, not the disk: no retry will open it


class Spool:
    def __init__(self, path: Path, max_items: int = 1_000_000, read_only: bool = False):
        """read_only: the file as it is, to read only (SQLite's immutable mode: its write-ahead log is not read, so
        only for a file with none, as a clean stop leaves it); every write raises SpoolError. For a disk that will
        not let the file open to write (read-only, full), which must not keep what the file holds from being sent."""
        self.path = Path(path).absolute()  # a chdir later must not make it look deleted (_write_back_if_deleted)
        self.existed = self.path.exists()  # a process of ours ran with it before
        self.max_items = max_items
        self.dropped = 0  # items deleted to make room (max_items), expendable ones included
        self.dropped_expendable = 0  # of which expendable
        self.puts = 0  # transactions that added items, by this process: a reader that has seen all can skip a look
        self._lock = threading.Lock()  # one connection shared by paho's thread and ours
        if read_only:
            with self._errors("open"):
                self._db = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path))}?immutable=1", uri=True,
                                           check_same_thread=False, isolation_level=None)
                self._db.execute("SELECT COUNT(*) FROM items").fetchone()  # a file that is no spool fails here
            self._key_index = True  # no index is made in a file not to be written
            self._write_back_after = math.inf
            self._file = self._identity()
            self._replaced = self._replaced_again_said = False
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.set_aside: Path | None = None  # where an unreadable file found at `path` was moved
        try:
            self._open()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) not in UNREADABLE:
                with self._errors("open"):
                    raise
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._db.close()
            self.set_aside = self._move_aside(exc)
            with self._errors("open"):
                self._open()
        self._key_index = False  # made when first needed (oldest): building it must never keep a spool from opening
        self._write_back_after = -math.inf  # a failed write-back (_write_back_if_deleted) waits before the next
        self._file = self._identity()  # the file this connection writes: another at `path` is not it
        self._replaced = False  # a file put in our file's place was moved aside once (_write_back_if_deleted)
        self._replaced_again_said = False  # … and another put there since: said once, not moved aside

    def _move_aside(self, exc: sqlite3.Error) -> Path:
        """The unreadable file (and its write-ahead log) renamed `<name>.unreadable-<UTC>`, said in one line;
        SpoolError if it cannot be (a read-only disk): then nothing is opened in its place."""
        aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        try:
            for suffix in ("-wal", "-shm", ""):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        except OSError as move:
            raise SpoolError(f"spool {self.path}: cannot open: {exc}; cannot move it aside: {move}") from None
        log.error("spool %s cannot be read (%s): moved aside to %s, and a new one started; what it held is lost to "
                  "this service", self.path, exc, aside)
        return aside

    def _open(self) -> None:
        """Connect and make the tables; sqlite3 errors as they come (the caller tells a damaged file from a disk)."""
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Takes effect in a new file only (before any table), and is a write: on an existing one it made a start
        # on a full disk fail, where reading and sending what the file holds still works.
        if self._db.execute("PRAGMA page_count").fetchone()[0] == 0:
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        _journal(self._db)
        self._db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "key TEXT NOT NULL, body BLOB NOT NULL)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
        if "expires_at" not in columns:  # spool files from before expiry existed
            self._db.execute("ALTER TABLE items ADD COLUMN expires_at REAL")
        if "expendable" not in columns:  # spool files from before expendable items existed
            self._db.execute("ALTER TABLE items ADD COLUMN expendable INTEGER NOT NULL DEFAULT 0")
        # Partial indexes: finding the expendable or expired items in a full spool (millions of rows) reads
        # only those, and costs nothing for the items without.
        self._db.execute("CREATE INDEX IF NOT EXISTS items_expendable ON items (id) WHERE expendable = 1")
        self._db.execute("CREATE INDEX IF NOT EXISTS items_expiry ON items (expires_at) "
                         "WHERE expires_at IS NOT NULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """SQLite's errors as one line naming the file; a transaction that failed is rolled back, a connection
        that failed to open is closed (a gateway tries again every second while the disk is full)."""
        try:
            yield
        except sqlite3.Error as exc:
            if getattr(self, "_db", None) is not None:
                with contextlib.suppress(sqlite3.Error):
                    if doing == "open":
                        self._db.close()
                    elif self._db.in_transaction:
                        self._db.execute("ROLLBACK")
            raise SpoolError(f"spool {self.path}: cannot {doing}: {exc}") from None

    def put(self, items: list[Item], meta: Mapping[str, bytes | None] | None = None) -> list[int]:
        """Append (key, body[, expires_at_s[, expendable]]) items, in order, and set `meta` keys (a key set to None is
        deleted), in one transaction: their ids. Beyond max_items, expendable items are deleted first (these new ones
        too), then the oldest."""
        if not items and not meta:
            return []
        with self._lock, self._errors("write"):
            self._write_back_if_deleted()
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO items (key, body, expires_at, expendable) VALUES (?, ?, ?, ?)",
                                 [(i[0], i[1], i[2] if len(i) > 2 else None, int(bool(i[3])) if len(i) > 3 else 0)
                                  for i in items])
            meta = meta or {}
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 [(k, v) for k, v in meta.items() if v is not None])
            self._db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k, v in meta.items() if v is None])
            # One connection, under the lock, in one transaction: the items took the ids up to the sequence's last.
            last = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            ids = list(range(last[0] - len(items) + 1, last[0] + 1)) if items and last else []
            excess = max(0, self._count() - self.max_items)
            expendable = 0
            if excess:
                expendable = self._db.execute("DELETE FROM items WHERE id IN (SELECT id FROM items "
                                              "WHERE expendable = 1 ORDER BY id LIMIT ?)", (excess,)).rowcount
            if excess > expendable:
                self._db.execute("DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id LIMIT ?)",
                                 (excess - expendable,))
            self._db.execute("COMMIT")
            self.puts += bool(items)
            self.dropped += excess
            self.dropped_expendable += expendable
            return ids

    def peek(self, n: int, after_id: int = 0, skip_keys: tuple[str, ...] = ()) -> list[Row]:
        """The oldest n items (id, key, body, expires_at_s) with id > after_id and a key not in skip_keys, without
        removing them."""
        with self._lock, self._errors("read"):
            marks = ",".join("?" * len(skip_keys))
            # +key: the look goes by id, never by the key index (an ANALYZE could make SQLite think otherwise)
            return self._db.execute(f"SELECT id, key, body, expires_at FROM items WHERE id > ? "
                                    f"AND +key NOT IN ({marks}) ORDER BY id LIMIT ?",
                                    (after_id, *skip_keys, n)).fetchall()

    def of_key(self, key: str, n: int) -> list[Row]:
        """The oldest n items of one key, found by reading the table (for a look at a start: no index is made)."""
        with self._lock, self._errors("read"):
            return self._db.execute("SELECT id, key, body, expires_at FROM items WHERE +key = ? ORDER BY id LIMIT ?",
                                    (key, n)).fetchall()

    def oldest(self, key: str, from_id: int, n: int) -> list[Row]:
        """The oldest n items of one key with id ≥ from_id."""
        with self._lock:
            if not self._key_index:
                # A held topic's oldest (SpooledSender) read the whole table without it (3.8 ms at 100k items).
                # Made here, not at open: on a large spool it takes a second and room a full disk may not have.
                self._key_index = True
                with contextlib.suppress(sqlite3.Error):  # none: each look reads the table, slower, no worse
                    self._db.execute("CREATE INDEX IF NOT EXISTS items_key ON items (key, id)")
            with self._errors("read"):
                return self._db.execute("SELECT id, key, body, expires_at FROM items WHERE id >= ? AND key = ? "
                                        "ORDER BY id LIMIT ?", (from_id, key, n)).fetchall()

    def last_id(self) -> int:
        """The highest id given so far (0 for none): an item put later has a higher one."""
        with self._lock, self._errors("read"):
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            return int(row[0]) if row else 0

    def count_keys(self, keys: tuple[str, ...]) -> int:
        """How many items have one of these keys."""
        with self._lock, self._errors("read"):
            marks = ",".join("?" * len(keys))
            return cast(int, self._db.execute(f"SELECT COUNT(*) FROM items WHERE key IN ({marks})", keys).fetchone()[0])

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock, self._errors("delete"):
            self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
            self._reclaim()

    def expire(self, now_s: float) -> int:
        """Delete the items whose expiry time is now_s or earlier: how many."""
        with self._lock, self._errors("delete"):
            gone = self._db.execute("DELETE FROM items WHERE expires_at <= ?", (now_s,)).rowcount
            if gone:
                self._reclaim()
            return gone

    def _reclaim(self) -> None:
        """Give the pages deletes freed back to the file system, once they are worth it."""
        if self._db.execute("PRAGMA freelist_count").fetchone()[0] < RECLAIM_PAGES:
            return
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
            # executescript: it steps the pragma to its end; execute() stops after the first page.
            self._db.executescript("PRAGMA incremental_vacuum")
        elif not self._count():  # a file from before auto-vacuum: converted once it is empty (cheap then)
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # the shrunk file, and an empty log

    def meta(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return cast(int, self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def _identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at `path`, None if there is none."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _write_back_if_deleted(self) -> None:
        """The file deleted under us (a clean-up of its folder): SQLite went on writing to the unlinked file, and the
        next start found none of it (a helper: 71 devices' alert state gone, not a line said). Written back to
        `path` (SQLite's backup of what this connection sees), and used from there.

        Another file put in its place (a backup restored, a copy of another spool) is moved aside to
        `<name>.replaced-<UTC time>`, kept as it came, and ours written back: left there, it was read at the next
        start with our write-ahead log (`<name>-wal`, by name), SQLite said "database disk image is malformed", and
        neither file's items were sent (a probe: 26 403 items). Once per process: two processes on one path (a
        mistake) would otherwise move each other's file aside at every write; a second replacement is said (an
        error, once): what is written from then on goes to a file no longer at `path`.

        A symlinked path: the file it names is moved aside and written back, where SQLite keeps the -wal (it
        resolves the link), and the link stays."""
        if time.monotonic() < self._write_back_after:
            return
        if (found := self._identity()) == self._file:
            return
        if found is not None and self._replaced:
            if not self._replaced_again_said:
                self._replaced_again_said = True
                log.error("spool %s was replaced again while in use: not moved aside a second time (once per process: "
                          "another process on this path?); what is written now goes to a file no longer there and is "
                          "lost at the next start: stop the other process, or restart this one", self.path)
            return
        real = Path(os.path.realpath(self.path))  # the link's file: SQLite's -wal and -shm are beside it
        copy = real.with_name(real.name + ".restoring")
        aside = None
        try:
            if found is not None:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                aside = real.with_name(f"{real.name}.replaced-{stamp}")
                real.replace(aside)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's pages into the (unlinked) file
            real.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(copy)) as target:
                self._db.backup(target)
            copy.replace(real)  # before the old connection closes: until here, a failure leaves it as it was
        except (OSError, sqlite3.Error) as exc:  # a full disk, the folder deleted again: on with the old file, later
            with contextlib.suppress(OSError):
                copy.unlink()
            if aside is not None and not real.exists():  # the file found there goes back where it was
                with contextlib.suppress(OSError):
                    aside.replace(real)
            self._write_back_after = time.monotonic() + WRITE_BACK_RETRY_S
            log.warning("spool %s was %s while in use and cannot be written back yet (%s); tried again in %.0f s",
                        self.path, "deleted" if found is None else "replaced", exc, WRITE_BACK_RETRY_S)
            return
        self._db.close()  # the old file's -wal and -shm go with it; the new file has none yet
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        _journal(self._db)
        self._file = self._identity()
        if aside is None:
            log.warning("spool %s was deleted while in use: written back", self.path)
        else:
            self._replaced = True
            log.warning("spool %s was replaced by another file while in use: written back; the file found there is "
                        "kept as %s", self.path, aside.name)

    def close(self) -> None:
        with self._lock:
            self._db.close()
