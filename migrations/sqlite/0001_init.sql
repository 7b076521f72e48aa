-- sessiond SQLite schema, version 1.
CREATE TABLE tenants (
    api        TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    seq        INTEGER NOT NULL DEFAULT 0,  -- last number handed out by the tenant's sequence
    PRIMARY KEY (api, id)
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    api        TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,          -- SHA-256 of the secret; the secret is never stored
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    FOREIGN KEY (api, tenant) REFERENCES tenants (api, id)
);

CREATE TABLE sessions (
    pk      INTEGER PRIMARY KEY,              -- insertion order, the paging cursor
    api     TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    tenant  TEXT    NOT NULL,
    version INTEGER NOT NULL,
    body    BLOB    NOT NULL,                 -- exact bytes the public GET returns
    doc     BLOB,                             -- stored document when it differs from body (secrets)
    UNIQUE (api, id),
    FOREIGN KEY (api, tenant) REFERENCES tenants (api, id)
);

CREATE INDEX sessions_by_tenant ON sessions (api, tenant, pk);
