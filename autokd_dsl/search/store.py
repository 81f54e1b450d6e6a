"""The on-disk record of a search: one SQLite row per (candidate, rung), written in its own transaction.

A killed search loses at most the evaluations in flight; rows are keyed by (candidate key, proxy-settings key),
and the settings key holds the rung's epochs, so a resumed search replays finished (candidate, rung) pairs from
here instead of training them again. Baselines are rows too (``baseline`` = 1, ``label`` their name).
The ``format`` meta entry says which layout a store file has (:data:`FORMAT`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ..errors import KDError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT NOT NULL, settings TEXT NOT NULL, seq INTEGER NOT NULL, kd TEXT NOT NULL, path TEXT NOT NULL,
    reward REAL, ce REAL, gap REAL, status TEXT NOT NULL, reason TEXT, seconds REAL, losses TEXT,
    baseline INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, acc REAL, label TEXT, rung INTEGER NOT NULL DEFAULT 0,
    epochs INTEGER,
    PRIMARY KEY (key, settings)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

COLUMNS = ("key", "settings", "seq", "kd", "path", "reward", "ce", "gap", "status", "reason", "seconds",
           "losses", "baseline", "acc", "label", "rung", "epochs")


STORE_FILE = "search.sqlite"
FORMAT = "autokd-dsl/search/2"  # kept in the meta table; a store without it is another program's database
"""Store layout 2 adds validation accuracy, the baseline's label, and the rung (and its epochs) of each row."""
_SQLITE_HEADER = b"SQLite format 3\x00"


def _foreign(path: Path, why: str) -> KDError:
    return KDError(f"{path} is not an autokd-dsl search store ({why}); it was left as it is",
                   hint="choose another --out folder")


def check_store(path: Path) -> None:
    """Refuse a file that is not a search store of this program, reading it only (nothing is written to it)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        raise _foreign(path, "not a regular file")
    with open(path, "rb") as handle:
        if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            raise _foreign(path, "not an SQLite database")
    # `immutable` reads the main file only and creates nothing next to it (no -wal, no -shm); a store whose
    # last writes are still in its write-ahead log (a killed search) is read through the log it left
    meta = _read_meta(path, "immutable=1")
    if meta is None and Path(f"{path}-wal").exists():
        meta = _read_meta(path, "mode=ro")
    if meta is None:
        raise _foreign(path, "it has no tables `evaluations` and `meta`")
    marker = meta.get("format")
    if marker is None and "identity" not in meta:  # stores written before the marker hold an identity
        raise _foreign(path, "no format marker")
    if marker is not None and json.loads(marker) != FORMAT:
        raise KDError(f"{path} is a search store of another format ({json.loads(marker)}, this is {FORMAT}); "
                      "it was left as it is", hint="choose another --out folder")


def _read_meta(path: Path, mode: str) -> dict | None:
    """The meta table of a store, or None when the database has no store tables."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as err:
        raise _foreign(path, str(err)) from None
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"evaluations", "meta"} <= tables:
            return None
        return dict(db.execute("SELECT name, value FROM meta"))
    except sqlite3.Error as err:
        raise _foreign(path, str(err)) from None
    finally:
        db.close()


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        existed = self.path.exists() or self.path.is_symlink()
        if existed:
            check_store(self.path)  # before the first write: a foreign database is refused untouched
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(evaluations)")}
        except sqlite3.DatabaseError as err:
            raise KDError(f"{self.path} is not a search store ({err})",
                          hint="choose another --out folder") from None
        if not set(COLUMNS) <= columns:
            raise KDError(f"{self.path} holds a search store of an older layout "
                          f"(no {', '.join(sorted(set(COLUMNS) - columns))})",
                          hint="choose another --out folder (the old store stays as it is)")
        self.set_meta({"format": FORMAT})

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT name, value FROM meta")}

    def set_meta(self, values: dict) -> None:
        with self.db:
            for k, v in values.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v, sort_keys=True)))

    def get(self, key: str, settings: str) -> dict | None:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM evaluations WHERE key = ? AND settings = ?",
                              (key, settings))
        row = cur.fetchone()
        return dict(zip(COLUMNS, row)) if row else None

    def add(self, row: dict) -> None:
        values = dict(row)
        values["path"] = json.dumps(list(values["path"]))
        values["losses"] = json.dumps(values.get("losses") or {})
        values.setdefault("baseline", 0)
        values["seq"] = self.count(baseline=None)
        values["created"] = time.time()
        names = list(COLUMNS) + ["created"]
        with self.db:
            self.db.execute(f"INSERT OR IGNORE INTO evaluations ({', '.join(names)}) VALUES "
                            f"({', '.join('?' * len(names))})", [values.get(n) for n in names])

    def count(self, baseline: int | None = 0) -> int:
        if baseline is None:
            return self.db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE baseline = ?", (baseline,)).fetchone()[0]

    def rows(self, baseline: int | None = 0) -> list[dict]:
        """Rows in the order they were written (``baseline`` None: all)."""
        where, args = ("", ()) if baseline is None else ("WHERE baseline = ?", (baseline,))
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM evaluations {where} ORDER BY seq", args)
        return [dict(zip(COLUMNS, r)) for r in cur]

    def close(self) -> None:
        self.db.close()


def search_config(folder: Path, entry: str = "config") -> dict | None:
    """The settings of the search stored in ``folder`` (read only), or None when it holds no search store;
    ``entry="identity"``: what a resume must match."""
    path = Path(folder) / STORE_FILE
    if not path.is_file():
        return None
    try:
        check_store(path)
        meta = _read_meta(path, "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1") or {}
    except (KDError, sqlite3.Error):
        return None
    return json.loads(meta[entry]) if entry in meta else None
