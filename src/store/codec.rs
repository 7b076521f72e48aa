//! Compression of the documents the SQLite store keeps: zstd with a dictionary per api.
//!
//! The sessions of one api share most of their bytes (field names, enum values, the shape of
//! nested objects), which a general compressor cannot learn from one small document. So each api
//! has a dictionary trained on generated sessions (`scripts/train-dicts.sh`), embedded in the binary
//! and recorded in the database (table `codecs`) when a store is first opened with it.
//!
//! A stored blob is either the JSON itself (it starts with `{`: rows written before compression
//! existed, or a document that compression would not make smaller), or
//! `0x00, codec id, zstd frame`. Every blob names its dictionary and the database keeps every
//! dictionary it ever used, so a later binary with new dictionaries still reads every row, and
//! the database file stays readable without this binary's copy of them.
//!
//! Compression happens off the writer thread (on the caller, or on every core for batches; only a
//! numbered OpenCX create, whose document is built from its number, is compressed on the writer),
//! and decompression where the read runs; the session cache holds the plain bytes, so a cached GET
//! never sees a compressed blob.

use std::cell::RefCell;

use rusqlite::{Connection, OptionalExtension, params};
use zstd::zstd_safe::{self, CCtx, CDict, DCtx, DDict};

use crate::vendor::ApiId;

/// First byte of a compressed blob. JSON text starts with `{` (or whitespace), never with 0.
const TAG: u8 = 0;
/// Compression level. With these dictionaries, on generated sessions of another seed than they
/// were trained on, level 1 compressed as well as 2 and 5–20 % faster than 3.
const LEVEL: i32 = 1;
/// Largest document a frame may claim to hold: a corrupt length must not allocate gigabytes.
const MAX_DOCUMENT: u64 = 64 << 20;

/// The dictionary each api's new blobs use: `(name, bytes)`. A name is recorded in the database
/// with the bytes, so a changed dictionary needs a new name (`…-2`), never new bytes under an
/// old one.
fn embedded(api: ApiId) -> (&'static str, &'static [u8]) {
    match api {
        ApiId::Salesnip => ("salesnip-1", include_bytes!("dicts/salesnip.zdict")),
        ApiId::Opencx => ("opencx-1", include_bytes!("dicts/opencx.zdict")),
        ApiId::Funnelfox => ("funnelfox-1", include_bytes!("dicts/funnelfox.zdict")),
        ApiId::Alcamine => ("alcamine-1", include_bytes!("dicts/alcamine.zdict")),
        ApiId::Anam => ("anam-1", include_bytes!("dicts/anam.zdict")),
    }
}

/// Why a stored blob could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored blob names codec {0}, which this database does not have")]
    UnknownCodec(u8),
    #[error("stored blob is corrupt: {0}")]
    Corrupt(&'static str),
}

struct Codec {
    /// Only for the codecs new blobs are written with.
    cdict: Option<CDict<'static>>,
    ddict: DDict<'static>,
}

/// The dictionaries of one database.
pub struct Codecs {
    /// Indexed by codec id (1..=255).
    by_id: Vec<Option<Codec>>,
    /// The codec id new blobs of each api use, in [`ApiId::ALL`] order.
    current: [u8; ApiId::ALL.len()],
}

thread_local! {
    /// One compression and one decompression context per thread: creating them costs more
    /// than compressing a document.
    static CCTX: RefCell<(CCtx<'static>, Vec<u8>)> = RefCell::new((CCtx::create(), Vec::new()));
    static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

fn api_index(api: ApiId) -> usize {
    ApiId::ALL
        .iter()
        .position(|&a| a == api)
        .expect("every api is in ALL")
}

impl Codecs {
    /// Records this binary's dictionaries in the database (on the writer's connection, once
    /// the schema is current) and loads every dictionary the database has.
    pub fn load(conn: &mut Connection) -> anyhow::Result<Codecs> {
        // Holding the write lock: two processes opening a new database at once (a server and
        // the CLI) must not both give one id to different dictionaries.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let codecs = Codecs::recorded(&tx, true)?;
        tx.commit()?;
        Ok(codecs)
    }

    /// Loads every dictionary the database has, for a connection that only reads: it records
    /// none, so an api whose dictionary is not recorded (a store no session of it was written
    /// to by this binary) can be read but not written.
    pub fn read(conn: &Connection) -> anyhow::Result<Codecs> {
        let tx = conn.unchecked_transaction()?;
        Codecs::recorded(&tx, false)
    }

    /// Checks the database's dictionaries against this binary's, records those it lacks if
    /// `record`, and loads them all.
    fn recorded(tx: &rusqlite::Transaction<'_>, record: bool) -> anyhow::Result<Codecs> {
        for api in ApiId::ALL {
            let (name, dict) = embedded(api);
            let known: Option<Vec<u8>> = tx
                .query_row("SELECT dict FROM codecs WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            match known {
                Some(bytes) if bytes == dict => {}
                Some(_) => anyhow::bail!(
                    "the database's dictionary `{name}` differs from this binary's: one of them was changed under an old name"
                ),
                None if !record => {}
                None => {
                    let next: i64 =
                        tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM codecs", [], |r| {
                            r.get(0)
                        })?;
                    anyhow::ensure!(next <= 255, "no codec id left for dictionary `{name}`");
                    tx.execute(
                        "INSERT INTO codecs (id, api, name, dict) VALUES (?1, ?2, ?3, ?4)",
                        params![next, api.as_str(), name, dict],
                    )?;
                }
            }
        }
        let mut by_id: Vec<Option<Codec>> = (0..256).map(|_| None).collect();
        let mut current = [0u8; ApiId::ALL.len()];
        let mut st = tx.prepare("SELECT id, api, name, dict FROM codecs")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let api: String = r.get(1)?;
            let name: String = r.get(2)?;
            let dict: Vec<u8> = r.get(3)?;
            let id = u8::try_from(id)
                .ok()
                .filter(|&id| id != 0)
                .ok_or_else(|| anyhow::anyhow!("codec id {id} is out of range"))?;
            let api: Option<ApiId> = api.parse().ok();
            let writes_with = api.filter(|&a| embedded(a).0 == name);
            if let Some(api) = writes_with {
                current[api_index(api)] = id;
            }
            by_id[id as usize] = Some(Codec {
                cdict: writes_with.map(|_| CDict::create(&dict, LEVEL)),
                ddict: DDict::create(&dict),
            });
        }
        drop(rows);
        drop(st);
        Ok(Codecs { by_id, current })
    }

    /// The blob to store for `json`, a document of `api`.
    pub fn pack(&self, api: ApiId, json: &[u8]) -> Vec<u8> {
        let id = self.current[api_index(api)];
        let cdict = self.by_id[id as usize]
            .as_ref()
            .and_then(|c| c.cdict.as_ref())
            .expect("load() made a writing codec for every api");
        // Compressed into a buffer of the thread's, then copied into an allocation of the exact
        // size: a blob may wait in memory for its batch's commit.
        CCTX.with_borrow_mut(|(cctx, buf)| {
            buf.clear();
            buf.reserve(2 + zstd_safe::compress_bound(json.len()));
            buf.extend_from_slice(&[TAG, id]);
            let mut frame = std::io::Cursor::new(std::mem::take(buf));
            frame.set_position(2);
            let packed = cctx.compress_using_cdict(&mut frame, json, cdict);
            *buf = frame.into_inner();
            match packed {
                Ok(_) if buf.len() < json.len() => buf.to_vec(),
                // Incompressible, or zstd failed (it cannot with this bound): the JSON as it is.
                _ => json.to_vec(),
            }
        })
    }

    /// The JSON bytes of a stored blob read through `conn`. A blob of a dictionary this store
    /// did not have when it was opened (written since by a newer sessiond sharing the file) is
    /// decoded with the dictionary `conn` finds in the database.
    pub fn unpack(&self, blob: Vec<u8>, conn: &Connection) -> Result<Vec<u8>, CodecError> {
        match split(&blob)? {
            Some((id, frame)) => self.decode(id, frame, conn),
            None => Ok(blob), // plain JSON
        }
    }

    /// [`Codecs::unpack`] of a blob borrowed from SQLite's row: a compressed one is decoded
    /// from there, without first being copied out.
    pub fn unpack_ref(&self, blob: &[u8], conn: &Connection) -> Result<Vec<u8>, CodecError> {
        match split(blob)? {
            Some((id, frame)) => self.decode(id, frame, conn),
            None => Ok(blob.to_vec()),
        }
    }

    fn decode(&self, id: u8, frame: &[u8], conn: &Connection) -> Result<Vec<u8>, CodecError> {
        match &self.by_id[id as usize] {
            Some(codec) => unpack_frame(frame, &codec.ddict),
            None => unpack_with_stored_dict(conn, id, frame),
        }
    }
}

/// A compressed blob's codec id and frame; `None` for plain JSON.
fn split(blob: &[u8]) -> Result<Option<(u8, &[u8])>, CodecError> {
    match blob {
        [TAG, id, frame @ ..] => Ok(Some((*id, frame))),
        [TAG] => Err(CodecError::Corrupt("a tag without a codec")),
        _ => Ok(None),
    }
}

fn unpack_frame(frame: &[u8], ddict: &DDict<'_>) -> Result<Vec<u8>, CodecError> {
    let size = zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .filter(|&n| n <= MAX_DOCUMENT)
        .ok_or(CodecError::Corrupt("no valid content size"))?;
    let mut out = Vec::with_capacity(size as usize);
    let n = DCTX
        .with_borrow_mut(|dctx| dctx.decompress_using_ddict(&mut out, frame, ddict))
        .map_err(|_| CodecError::Corrupt("zstd could not decompress it"))?;
    if n as u64 != size {
        return Err(CodecError::Corrupt("shorter than its frame says"));
    }
    Ok(out)
}

/// Decodes `frame` with dictionary `id` as the database behind `conn` has it.
fn unpack_with_stored_dict(conn: &Connection, id: u8, frame: &[u8]) -> Result<Vec<u8>, CodecError> {
    let dict: Vec<u8> = conn
        .query_row("SELECT dict FROM codecs WHERE id = ?1", [id], |r| r.get(0))
        .optional()
        .ok()
        .flatten()
        .ok_or(CodecError::UnknownCodec(id))?;
    unpack_frame(frame, &DDict::create(&dict))
}

/// The JSON bytes of a blob read from a `sessions` row through any connection to a sessiond
/// database (for tools and tests that read the file behind the server's back).
pub fn read_blob(conn: &Connection, blob: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let Some((id, frame)) = split(&blob)? else {
        return Ok(blob);
    };
    Ok(unpack_with_stored_dict(conn, id, frame)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codecs() -> (Connection, Codecs) {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../migrations/sqlite/0002_codecs.sql"))
            .unwrap();
        let codecs = Codecs::load(&mut conn).unwrap();
        (conn, codecs)
    }

    const DOC: &[u8] = br#"{"id":"fa057d39-3f7e-435f-846d-31093b9bbca7","personaId":null,"clientLabel":"checkout-bot","startTime":"2026-01-05T10:00:00.000Z","endTime":null,"sessionLengthMs":null}"#;

    /// A generated session of `api`, as JSON (from a seed the dictionaries were not trained on).
    fn generated(api: ApiId, seed: u64) -> Vec<u8> {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let profile = api.profile();
        let tenant = profile.demo_tenant();
        let doc = profile.generate(&mut crate::vendor::fake::Fake { rng: &mut rng }, tenant);
        serde_json::to_vec(&doc).unwrap()
    }

    #[test]
    fn packs_smaller_and_unpacks_the_same_bytes() {
        let (conn, codecs) = codecs();
        for api in ApiId::ALL {
            for seed in 1..20 {
                let doc = generated(api, seed);
                let blob = codecs.pack(api, &doc);
                assert_eq!(blob[0], TAG, "{api:?} compressed");
                assert!(
                    blob.len() * 2 < doc.len(),
                    "{api:?}: {} of {} bytes",
                    blob.len(),
                    doc.len()
                );
                assert_eq!(codecs.unpack(blob.clone(), &conn).unwrap(), doc);
                assert_eq!(read_blob(&conn, blob).unwrap(), doc);
            }
        }
    }

    #[test]
    fn a_document_unlike_the_dictionary_still_round_trips() {
        let (conn, codecs) = codecs();
        let odd: Vec<u8> = format!(r#"{{"x":"{}"}}"#, r"é ☃ \u0000 ".repeat(200)).into_bytes();
        for api in ApiId::ALL {
            for doc in [DOC, &odd[..]] {
                let blob = codecs.pack(api, doc);
                assert_eq!(codecs.unpack_ref(&blob, &conn).unwrap(), doc);
                assert_eq!(codecs.unpack(blob, &conn).unwrap(), doc);
            }
        }
    }

    #[test]
    fn plain_json_blobs_are_read_as_they_are() {
        let (conn, codecs) = codecs();
        assert_eq!(codecs.unpack(DOC.to_vec(), &conn).unwrap(), DOC);
        assert_eq!(codecs.unpack_ref(DOC, &conn).unwrap(), DOC);
        // Too short to gain anything: stored as it is.
        assert_eq!(codecs.pack(ApiId::Anam, b"{}"), b"{}");
    }

    #[test]
    fn loading_again_keeps_the_ids_and_reads_old_blobs() {
        let (mut conn, first) = codecs();
        let blob = first.pack(ApiId::Alcamine, DOC);
        let again = Codecs::load(&mut conn).unwrap();
        assert_eq!(again.current, first.current);
        assert_eq!(again.unpack(blob, &conn).unwrap(), DOC);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM codecs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, ApiId::ALL.len() as i64);
    }

    #[test]
    fn a_changed_dictionary_under_an_old_name_is_refused() {
        let (mut conn, _) = codecs();
        conn.execute("UPDATE codecs SET dict = x'00' WHERE name = 'anam-1'", [])
            .unwrap();
        let err = Codecs::load(&mut conn).err().expect("refused").to_string();
        assert!(err.contains("anam-1"), "{err}");
    }

    /// A dictionary that another process (a newer sessiond sharing the file) recorded after this
    /// store was opened is found in the database.
    #[test]
    fn a_dictionary_recorded_later_is_read_from_the_database() {
        let (conn, codecs) = codecs();
        let (_, anam) = embedded(ApiId::Anam);
        conn.execute(
            "INSERT INTO codecs (id, api, name, dict) VALUES (42, 'anam', 'anam-2', ?1)",
            [anam],
        )
        .unwrap();
        let mut blob = codecs.pack(ApiId::Anam, DOC);
        blob[1] = 42; // the same dictionary's bytes, under the new id
        assert_eq!(codecs.unpack_ref(&blob, &conn).unwrap(), DOC);
        assert_eq!(codecs.unpack(blob, &conn).unwrap(), DOC);
    }

    #[test]
    fn damaged_blobs_are_errors_not_garbage() {
        let (conn, codecs) = codecs();
        let blob = codecs.pack(ApiId::Opencx, DOC);
        let mut unknown = blob.clone();
        unknown[1] = 200;
        assert!(matches!(
            codecs.unpack(unknown, &conn),
            Err(CodecError::UnknownCodec(200))
        ));
        let mut truncated = blob.clone();
        truncated.truncate(blob.len() - 3);
        assert!(matches!(
            codecs.unpack(truncated, &conn),
            Err(CodecError::Corrupt(_))
        ));
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        // A flipped byte either fails to decode or decodes to other bytes of the same length:
        // frames carry no checksum (4 bytes a document), as a plain JSON row has none either.
        if let Ok(bytes) = codecs.unpack(flipped, &conn) {
            assert_eq!(bytes.len(), DOC.len());
        }
        assert!(matches!(
            codecs.unpack(vec![TAG], &conn),
            Err(CodecError::Corrupt(_))
        ));
    }
}
