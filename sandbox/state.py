"""The sandbox's memory: one SQLite file that outlives the process, as the real systems' would.

A real agency back-office, mail relay, SMS gateway or portal does not forget what it took
when it is killed: it would not act twice on a transfer it already took, it would resume
the acknowledgements and outcome reports it still owes, and it would still show what it
received. Everything the stand-ins keep therefore lives here, in `SANDBOX_STATE_DIR`
/sandbox.db; without that variable, in an in-memory database (gone with the process, as
before).

Why the standard library's sqlite3, called on the event loop: a write is one short
transaction (tens of microseconds in WAL mode), so a thread hop (aiosqlite) would cost more
than it saves, and a write done before answering is then really done before answering.
`synchronous=NORMAL` in WAL mode survives the death of the process (kill -9: the committed
pages are in the WAL file, in the kernel's hands); only a power cut could lose the last
commits, which is not what a sandbox has to survive.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_NAME = "sandbox.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS agency_transfer (
    agency_code TEXT NOT NULL,
    -- The delivery's Idempotency-Key: the transfer id, or <transfer id>/<round>.
    transfer_id TEXT NOT NULL,
    dossier_code TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    channel TEXT NOT NULL,
    verified INTEGER NOT NULL,
    first_received_at TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    -- Times the agency acted on the transfer (started work on it): must stay 1.
    effects INTEGER NOT NULL DEFAULT 1,
    acknowledged_at TEXT,
    reported_at TEXT,
    PRIMARY KEY (agency_code, transfer_id)
);
-- The agency's to-do: callbacks still owed to the gateway, resumed at start-up. Clustered
-- on its key (WITHOUT ROWID): one b-tree to write per commit instead of two.
CREATE TABLE IF NOT EXISTS agency_callback (
    agency_code TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    what TEXT NOT NULL CHECK (what IN ('acknowledgement', 'outcome')),
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- Unix time before which it is not sent (the agency "works" on the step meanwhile).
    due_at REAL NOT NULL,
    -- The W3C trace context of the delivery it answers (JSON), carried on into the callback.
    trace TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (agency_code, transfer_id, what)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mail_message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    subject TEXT NOT NULL,
    text TEXT NOT NULL,
    headers TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_message_by_message_id ON mail_message (message_id);
CREATE TABLE IF NOT EXISTS sms_message (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    reference TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    text TEXT NOT NULL,
    encoding TEXT NOT NULL,
    segments INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    -- Requests that were resends of this reference: answered, never sent nor billed again.
    resends INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sms_message_by_recipient ON sms_message (recipient);
CREATE TABLE IF NOT EXISTS portal_push (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    dossier_code TEXT NOT NULL,
    fields TEXT NOT NULL,
    received_at TEXT NOT NULL,
    -- Pushes repeating this key: recognised, not recorded again.
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS portal_push_by_dossier ON portal_push (dossier_code);
CREATE TABLE IF NOT EXISTS webhook_callback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    body TEXT NOT NULL,
    headers TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_callback_by_receiver
    ON webhook_callback (receiver, webhook_id);
"""


def open_state(state_dir: str | Path | None = None) -> sqlite3.Connection:
    """The sandbox's database under state_dir (created if need be); in memory without one."""
    if state_dir:
        folder = Path(state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        target = str(folder / FILE_NAME)
    else:
        target = ":memory:"
    # isolation_level=None: each statement commits on its own unless `transaction` groups
    # them. check_same_thread=False: the app may be built on one thread and served on
    # another (tests); every use then happens on the event loop, one at a time.
    db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # A second process on the same file (a restart racing the old one's exit) waits briefly.
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(SCHEMA)
    _add_columns(db)
    return db


# Columns added since a state file may have been written: CREATE TABLE IF NOT EXISTS leaves
# an older table as it was.
ADDED_COLUMNS = {("agency_callback", "trace"): "TEXT NOT NULL DEFAULT '{}'"}


def _add_columns(db: sqlite3.Connection) -> None:
    for (table, column), definition in ADDED_COLUMNS.items():
        present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Several statements as one commit: all of them survive a kill, or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
