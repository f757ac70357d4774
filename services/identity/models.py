"""Identity's tables: logins in flight, citizen sessions, consents, the access log, and what
the token endpoint must remember across replicas."""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text

from core.maintenance import maintenance_table
from core.storage import BigId, UtcDateTime

metadata = MetaData()

# Between /login and /callback: the PKCE verifier and nonce never leave the server.
# A row is deleted when its callback arrives, so a replayed callback finds nothing.
logins = Table(
    "identity_login",
    metadata,
    Column("state", String(64), primary_key=True),
    Column("nonce", String(64), nullable=False),
    Column("code_verifier", String(128), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# A citizen logged in with e-ID. The key is the SHA-256 of the opaque session id the
# citizen holds, so the table alone does not let anyone act as a citizen.
citizen_sessions = Table(
    "identity_citizen_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("personal_id", String(12), nullable=False),
    Column("full_name", String(200), nullable=False),
    Column("assurance_level", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    # Contact details from the e-ID profile; absent when the provider released none.
    Column("email", String(320), nullable=True),
    Column("phone", String(32), nullable=True),
)

# Consent to attach registry data to one procedure's dossier: previewed, then granted by
# the citizen, then used by one dossier. `residence_sealed` is exactly what the preview
# showed, encrypted (services/identity/sealing.py): it holds personal IDs. Null only in
# rows from before sealing, whose clear copy the migration erased (preview again).
consents = Table(
    "identity_consent",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("citizen_ref", String(32), nullable=False, index=True),
    Column("procedure_code", String(40), nullable=False),
    Column("purpose", String(500), nullable=False),
    Column("requesting_agency", String(20), nullable=False),
    Column("state", String(12), nullable=False),
    Column("residence_sealed", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("granted_at", UtcDateTime(), nullable=True),
    Column("dossier_code", String(40), nullable=True),
)

# Append-only, hash-chained: each row's hash covers the previous hash and the row, so a
# changed, deleted or reordered row breaks the chain. Citizens are keyed by pseudonym.
access_log = Table(
    "identity_access_log",
    metadata,
    Column("seq", BigId, primary_key=True),
    Column("citizen_ref", String(32), nullable=False, index=True),
    Column("agency", String(20), nullable=False),
    Column("service", String(40), nullable=False),
    Column("data", String(40), nullable=False),
    Column("purpose", String(500), nullable=False),
    Column("dossier_code", String(40), nullable=False),
    Column("read_at", UtcDateTime(), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# The chain's head, one row: appends lock it, so concurrent reads are logged one after
# another, and it tells a deleted last row from a short log.
access_log_head = Table(
    "identity_access_log_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigId, nullable=False),
    Column("hash", String(64), nullable=False),
)
maintenance = maintenance_table(metadata, "identity")

# Client assertions (private_key_jwt) already used: the key refuses a second use of a jti on
# any replica. Rows are worthless once the assertion has expired, and are purged then.
used_assertions = Table(
    "identity_used_assertion",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
)

# Failed token requests per throttle key (a client id at an address, or an address), one
# token bucket each, shared by the replicas. `tat` is the bucket's theoretical arrival
# time (GCRA, as core/ratelimit.py) in epoch seconds; a row whose tat has passed is a full
# bucket, the same as no row, and is purged. interval_s and tolerance_s are the pace the
# row was last charged at (one statement charges keys of different paces).
failure_buckets = Table(
    "identity_failure_bucket",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("tat", Float(), nullable=False, index=True),
    Column("interval_s", Float(), nullable=False),
    Column("tolerance_s", Float(), nullable=False),
)
