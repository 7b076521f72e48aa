-- sessiond SQLite schema, version 2: compressed documents.
-- sessions.body and sessions.doc hold either the JSON itself (it starts with `{`) or a blob
-- `0x00, codec id, zstd frame` compressed with the dictionary `codecs.id` (src/store/codec.rs).
-- A dictionary is never changed or deleted: rows name it by id.
CREATE TABLE codecs (
    id   INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 255),
    api  TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    dict BLOB NOT NULL
);
