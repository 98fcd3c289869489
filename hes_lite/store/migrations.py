"""SQLite schema of HES-lite, as numbered migrations.

Owns the DDL only. ``MIGRATIONS[i]`` takes a database from ``user_version``
i to i+1; each runs in one transaction together with the version bump, so a
crash leaves the database at one version or the next. Old schemas are kept as
fixtures in tests/fixtures/hes/. Never edit a released step: add one.

Layout notes: meters and OBIS codes get integer ids; readings are a
WITHOUT ROWID table keyed (meter, ts, obis) — the key (meter, obis, ts) in the
order exports and range queries read it — with an untyped ``value`` column so
ints stay INTEGER and floats stay REAL (no NUMERIC affinity rounding 230.0 to
230).
"""

MIGRATIONS: list[list[str]] = [
    # 0 -> 1: the first schema.
    [
        """CREATE TABLE concentrators (
            id INTEGER PRIMARY KEY,
            device TEXT NOT NULL UNIQUE,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            last_seq INTEGER)""",
        """CREATE TABLE meters (
            id INTEGER PRIMARY KEY,
            meter TEXT NOT NULL UNIQUE,
            concentrator_id INTEGER REFERENCES concentrators(id))""",
        """CREATE TABLE obis_codes (
            id INTEGER PRIMARY KEY,
            obis TEXT NOT NULL UNIQUE,
            unit TEXT NOT NULL DEFAULT '')""",
        """CREATE TABLE raw_batches (
            id INTEGER PRIMARY KEY,
            concentrator_id INTEGER NOT NULL REFERENCES concentrators(id),
            seq INTEGER NOT NULL,
            key_epoch INTEGER NOT NULL,
            payload BLOB NOT NULL,
            received REAL NOT NULL,
            decoded INTEGER NOT NULL DEFAULT 0,
            UNIQUE (concentrator_id, seq))""",
        """CREATE TABLE readings (
            meter_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            obis_id INTEGER NOT NULL,
            value,
            PRIMARY KEY (meter_id, ts, obis_id)) WITHOUT ROWID""",
        """CREATE TABLE events (
            meter_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            code INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (meter_id, ts, code)) WITHOUT ROWID""",
        """CREATE TABLE codec_states (
            concentrator_id INTEGER PRIMARY KEY REFERENCES concentrators(id),
            seq INTEGER NOT NULL,
            state BLOB NOT NULL)""",
        """CREATE TABLE replay_windows (
            concentrator_id INTEGER NOT NULL REFERENCES concentrators(id),
            key_epoch INTEGER NOT NULL,
            state BLOB NOT NULL,
            PRIMARY KEY (concentrator_id, key_epoch))""",
        """CREATE TABLE rejects (
            reason TEXT PRIMARY KEY,
            count INTEGER NOT NULL,
            last_seen REAL NOT NULL)""",
        """CREATE TABLE keys (
            device TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            root_key BLOB NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            PRIMARY KEY (device, epoch))""",
    ],
    # 1 -> 2: rejects per device (health shows who is failing, not only why),
    # and an index so the backlog (undecoded raw batches) is cheap to find.
    [
        """CREATE TABLE rejects_new (
            device TEXT NOT NULL,
            reason TEXT NOT NULL,
            count INTEGER NOT NULL,
            last_seen REAL NOT NULL,
            PRIMARY KEY (device, reason))""",
        "INSERT INTO rejects_new SELECT '', reason, count, last_seen FROM rejects",
        "DROP TABLE rejects",
        "ALTER TABLE rejects_new RENAME TO rejects",
        "CREATE INDEX raw_batches_pending ON raw_batches (decoded) WHERE decoded = 0",
    ],
    # 2 -> 3: running totals, so /v1/health never counts a big table.
    # reading_rows counts meter-timestamp rows as received (a row sent twice
    # in two batches counts twice); readings and events are exact.
    [
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO counters SELECT 'readings', count(*) FROM readings",
        "INSERT INTO counters SELECT 'reading_rows', count(*) FROM "
        "(SELECT DISTINCT meter_id, ts FROM readings)",
        "INSERT INTO counters SELECT 'events', count(*) FROM events",
    ],
    # 3 -> 4: /v1/concentrators counts meters per concentrator; without this
    # index that is a scan of every meter for every concentrator.
    [
        "CREATE INDEX meters_concentrator ON meters (concentrator_id)",
    ],
    # 4 -> 5: each meter's last cycle result (the batch's "statuses") and since
    # when it holds: which meters the concentrators fail to read now, and why.
    [
        "ALTER TABLE meters ADD COLUMN result_since INTEGER",
        "ALTER TABLE meters ADD COLUMN result TEXT",
        "ALTER TABLE meters ADD COLUMN result_error TEXT",
    ],
    # 5 -> 6: access control. API tokens are kept as SHA-256 digests only
    # (revoked ones stay, so the audit log's names keep meaning something);
    # the audit log is append-only.
    [
        """CREATE TABLE api_tokens (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            digest BLOB NOT NULL UNIQUE,
            created REAL NOT NULL,
            revoked REAL)""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL,
            remote TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX audit_ts ON audit (ts)",
    ],
    # 6 -> 7: signed commands. The HES's Ed25519 command key(s); per
    # concentrator the last command counter handed out; per device the
    # downlink envelope nonces reserved so far (boot epoch, next counter);
    # the command queue with each command's life cycle and its signed bytes.
    [
        """CREATE TABLE command_keys (
            key_id BLOB PRIMARY KEY,
            public BLOB NOT NULL,
            private BLOB NOT NULL,
            created REAL NOT NULL,
            revoked REAL)""",
        """CREATE TABLE command_counters (
            device TEXT PRIMARY KEY,
            last INTEGER NOT NULL)""",
        """CREATE TABLE downlink_nonces (
            device TEXT PRIMARY KEY,
            boot INTEGER NOT NULL,
            next INTEGER NOT NULL)""",
        """CREATE TABLE commands (
            id TEXT PRIMARY KEY,
            device TEXT NOT NULL,
            counter INTEGER NOT NULL,
            meter TEXT,
            op TEXT NOT NULL,
            args TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            result TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            expires REAL NOT NULL,
            signed BLOB NOT NULL,
            actor TEXT NOT NULL,
            UNIQUE (device, counter))""",
        "CREATE INDEX commands_meter ON commands (meter, created)",
        "CREATE INDEX commands_open ON commands (state, device, counter) "
        "WHERE state IN ('queued', 'delivered')",
    ],
    # 7 -> 8: signed update packages (issue 12), as published: the header's
    # facts for listing and announcing, the whole file for ranged downloads.
    [
        """CREATE TABLE firmware (
            id TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            target TEXT NOT NULL,
            board TEXT NOT NULL,
            version TEXT NOT NULL,
            key_id TEXT NOT NULL,
            created REAL NOT NULL,
            actor TEXT NOT NULL,
            data BLOB NOT NULL)""",
    ],
    # 8 -> 9: a codec state may be stored packed (``hes_lite.wire_state``,
    # "WHS\x01": the decoder's columns as arrays, loaded without parsing),
    # not only canonical ("WCS\x02"). Nothing is converted: both forms load,
    # and a state is written packed after its next batch. The step exists so
    # that a HES older than this form, which would take a packed state for a
    # damaged one, refuses the database instead (a newer schema).
    [],
]

LATEST = len(MIGRATIONS)
