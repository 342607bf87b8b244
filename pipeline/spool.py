"""A bounded FIFO on disk that survives crashes: the one durability mechanism of gateway and bridge.

SQLite in WAL mode (stdlib, crash-safe): a committed `put` survives `kill -9` of the process.
Items keep their order; the oldest are dropped (and counted) only when `max_items` is reached.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class Spool:
    def __init__(self, path: Path, max_items: int = 1_000_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self.dropped = 0
        self._lock = threading.Lock()  # one connection shared by paho's thread and ours
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against process crashes
        self._db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "key TEXT NOT NULL, body BLOB NOT NULL)")

    def put(self, items: list[tuple[str, bytes]]) -> None:
        """Append (key, body) pairs, in order, in one transaction."""
        if not items:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO items (key, body) VALUES (?, ?)", items)
            excess = self._count() - self.max_items
            if excess > 0:
                self._db.execute("DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id LIMIT ?)",
                                 (excess,))
                self.dropped += excess
            self._db.execute("COMMIT")

    def peek(self, n: int, after_id: int = 0) -> list[tuple[int, str, bytes]]:
        """The oldest n items with id > after_id, without removing them."""
        with self._lock:
            return self._db.execute("SELECT id, key, body FROM items WHERE id > ? ORDER BY id LIMIT ?",
                                    (after_id, n)).fetchall()

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
