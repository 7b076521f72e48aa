-- sessiond PostgreSQL schema, version 1 (mirrors migrations/sqlite/0001_init.sql).
-- Text compares bytewise (COLLATE "C"), as in SQLite, so listings come in the same order.
CREATE TABLE tenants (
    api        TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL DEFAULT 0,   -- last number handed out by the tenant's sequence
    PRIMARY KEY (api, id)
);

CREATE TABLE api_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    api        TEXT COLLATE "C" NOT NULL,
    tenant     TEXT COLLATE "C" NOT NULL,
    hash       BYTEA NOT NULL UNIQUE,       -- SHA-256 of the secret; the secret is never stored
    created_at TEXT COLLATE "C" NOT NULL,
    revoked_at TEXT COLLATE "C",
    FOREIGN KEY (api, tenant) REFERENCES tenants (api, id)
);

CREATE TABLE sessions (
    pk      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order, the paging cursor
    api     TEXT COLLATE "C" NOT NULL,
    id      TEXT COLLATE "C" NOT NULL,
    tenant  TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    body    BYTEA NOT NULL,                 -- exact bytes the public GET returns
    doc     BYTEA,                          -- stored document when it differs from body (secrets)
    UNIQUE (api, id),
    FOREIGN KEY (api, tenant) REFERENCES tenants (api, id)
);

CREATE INDEX sessions_by_tenant ON sessions (api, tenant, pk);
