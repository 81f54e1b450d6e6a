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
FORMAT = 2
"""Store layout: 2 adds validation accuracy, the baseline's label, and the rung (and its epochs) of each row."""


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(evaluations)")}
        except sqlite3.DatabaseError as err:
            raise KDError(f"{self.path} is not a search store ({err})",
                          hint="choose another --out folder") from None
        found = self.meta().get("format", FORMAT if not self.count(baseline=None) else 1)
        if found != FORMAT or not set(COLUMNS) <= columns:
            raise KDError(f"{self.path} holds a search store of format {found}; this version reads format {FORMAT}",
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
