-- sessiond SQLite schema, version 3: the indexes of `sessions` are indexes of their own.
-- Version 1 declared `UNIQUE (api, id)` in the table, and SQLite cannot drop such an index. As
-- `sessions_by_id` it can be: a bulk load into an empty store (import, seed) drops both indexes
-- and builds them once after the rows (src/store/sqlite.rs, `begin_bulk`), rather than putting each
-- row at a random place of the id index. The table is copied as it is: same rows, same `pk`s.
CREATE TABLE sessions_v3 (
    pk      INTEGER PRIMARY KEY,              -- insertion order, the paging cursor
    api     TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    tenant  TEXT    NOT NULL,
    version INTEGER NOT NULL,
    body    BLOB    NOT NULL,                 -- exact bytes the public GET returns
    doc     BLOB,                             -- stored document when it differs from body (secrets)
    FOREIGN KEY (api, tenant) REFERENCES tenants (api, id)
);
INSERT INTO sessions_v3 (pk, api, id, tenant, version, body, doc)
    SELECT pk, api, id, tenant, version, body, doc FROM sessions ORDER BY pk;
DROP TABLE sessions;
ALTER TABLE sessions_v3 RENAME TO sessions;
CREATE UNIQUE INDEX sessions_by_id ON sessions (api, id);
CREATE INDEX sessions_by_tenant ON sessions (api, tenant, pk);
