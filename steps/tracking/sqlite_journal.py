"""A SQLite tracking store in write-ahead-log (WAL) mode, so that many small runs write faster.

Every run MLflow writes into a SQLite file costs several transactions. In SQLite's default
(rollback-journal) mode each commit writes and syncs a journal file and the database, and locks
out readers (the MLflow UI, a second pipeline) meanwhile; in WAL mode a commit appends to one
log file and readers go on reading, which writes the evaluate step's per-sample runs faster
than the default mode (figures: benchmarks/README.md, "Per-sample runs").

The mode belongs to the database file and stays with it; MLflow, `mlflow ui` and `mlflow server`
open such a file as any other. SQLite's WAL needs the file on a local disk, not on a network
share: there, set SALIENCY_FLOW_SQLITE_WAL=0 and the file's journal mode is left as it is.
Where another process holds the file locked past a short wait, it is left as it is too, with a
warning; nothing fails for want of WAL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

_logger = logging.getLogger(__name__)

WAL_ENV = "SALIENCY_FLOW_SQLITE_WAL"
OFF_VALUES = ("0", "false", "no", "off")
LOCK_WAIT_SECONDS = 5.0


def wal_wanted() -> bool:
    return os.environ.get(WAL_ENV, "1").strip().lower() not in OFF_VALUES


def journal_mode(path: str | Path, set_to: str | None = None) -> str:
    """The journal mode of an existing SQLite file ('delete', 'wal', ...), after setting it to
    `set_to` if given (SQLite answers with the mode it is in, changed or not)."""
    statement = f"PRAGMA journal_mode={set_to}" if set_to else "PRAGMA journal_mode"
    with contextlib.closing(sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS)) as connection:
        return connection.execute(statement).fetchone()[0]


def use_wal(path: str | Path) -> str | None:
    """Put the existing SQLite file at `path` in WAL mode, unless SALIENCY_FLOW_SQLITE_WAL=0.

    Returns the file's journal mode afterwards ('wal' once switched); None for no file (nothing
    is created) or a file SQLite cannot open or change, which is logged and left as it is.
    """
    if not Path(path).is_file():
        return None
    try:
        return journal_mode(path, set_to="WAL" if wal_wanted() else None)
    except sqlite3.Error as error:
        _logger.warning("Tracking store %s left in its journal mode (%s); runs are written "
                        "as usual, more slowly", path, error)
        return None
