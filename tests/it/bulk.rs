//! Bulk data through the real binary: `seed` (valid, deterministic sessions), `export` → `import`
//! (a byte-for-byte round trip that carries key hashes and OpenCX ticket numbers), import errors
//! (the bad line is named and nothing of its batch is stored), stdin and stdout; and the admin
//! API's `?fill=true`, which generates what a partial document leaves out.

use std::collections::BTreeSet;
use std::process::Output;

use reqwest::Method;
use serde_json::{Value, json};
use sessiond::ApiId;
use sessiond::bulk::BATCH;

use crate::common::process::{ProcessServer, RunningCli, cli, cli_as, cli_with_input, seed_words};
use crate::common::{Client, Reply, Storage, TestServer, fixtures};

per_api!(
    seed_creates_the_tenant_and_contract_valid_sessions,
    the_same_seed_gives_the_same_sessions,
    fill_generates_a_contract_valid_session,
);

per_backend!(
    a_seed_of_ids_the_store_holds_names_the_first_and_changes_nothing,
    export_import_export_is_byte_identical,
    a_session_line_in_another_layout_imports_as_its_export,
    export_layout_lines_with_spaces_or_escapes_import_as_their_export,
    an_import_keeps_sessions_keys_revocations_and_tickets,
    imported_tickets_continue_after_the_highest_without_a_sequence_field,
    a_broken_line_is_named_and_nothing_of_its_batch_is_stored,
    a_broken_line_in_a_file_shorter_than_a_batch_stores_none_of_its_sessions,
    a_broken_first_line_is_named_and_blank_lines_are_skipped,
    the_first_bad_line_is_named_though_a_later_one_is_unreadable,
    a_line_that_is_not_utf8_is_named_unless_a_bad_line_comes_before_it,
    an_existing_session_id_is_named_and_nothing_of_its_batch_is_stored,
    an_id_twice_in_a_file_for_an_empty_store_is_named_and_the_batches_before_it_are_kept,
    a_batch_that_cannot_be_stored_is_named_though_a_later_tenant_line_is_bad,
    import_reads_stdin_and_export_writes_only_ndjson_to_stdout,
    fill_keeps_the_fields_the_client_gave,
    fill_completes_every_element_of_an_array_longer_than_the_generated_one,
    sequence_numbers_out_of_range_are_refused_on_import,
    an_import_numbers_new_tickets_after_the_restored_ones,
    an_api_named_twice_is_exported_once,
    a_salesnip_url_of_another_base_is_restored_as_it_was,
    an_import_restores_nulls_and_spellings_as_they_are_written,
    a_key_read_after_a_bad_line_is_not_stored,
    a_key_whose_id_is_taken_is_named_before_any_session_is_stored,
    a_line_longer_than_the_limit_is_named_not_read_whole,
    an_interrupted_import_keeps_its_stored_batches_and_names_the_line_to_go_on_from,
    an_interrupted_seed_keeps_its_stored_batches,
    an_interrupted_export_ends_with_a_whole_page,
    an_export_beside_a_server_writing_is_the_store_as_it_began,
);

// ---- the binary on a store ----------------------------------------------------------------------

/// `sessiond WORDS… <the options naming storage>`.
async fn run(storage: &Storage, words: &[&str]) -> Output {
    let args = with_store(storage, words);
    cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// [`run`] with `input` on stdin.
async fn run_with_input(storage: &Storage, words: &[&str], input: &str) -> Output {
    let args = with_store(storage, words);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli_with_input(&args, input.as_bytes()).await
}

fn with_store(storage: &Storage, words: &[&str]) -> Vec<String> {
    words
        .iter()
        .map(|w| (*w).to_owned())
        .chain(storage.args())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_succeeded(words: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "sessiond {words:?} failed ({}):\nstderr: {}",
        out.status,
        stderr(out)
    );
}

/// [`run`], which must succeed.
async fn run_ok(storage: &Storage, words: &[&str]) -> Output {
    let out = run(storage, words).await;
    assert_succeeded(words, &out);
    out
}

/// The summary line on stderr starts with `expected` (e.g. `seeded 1 tenant, 0 keys, 5 sessions`).
#[track_caller]
fn assert_summary(out: &Output, expected: &str) {
    let err = stderr(out);
    assert!(
        err.lines().any(|l| l.starts_with(expected)),
        "no summary line `{expected} …` on stderr:\n{err}"
    );
}

/// `seed --api A --tenant T --count N --seed S`, which must succeed.
async fn seed(storage: &Storage, api: ApiId, tenant: &str, count: usize, rng_seed: u64) -> Output {
    let (count, rng_seed) = (count.to_string(), rng_seed.to_string());
    let words = [
        "seed",
        "--api",
        api.as_str(),
        "--tenant",
        tenant,
        "--count",
        &count,
        "--seed",
        &rng_seed,
    ];
    run_ok(storage, &words).await
}

/// `export [--api A]… -o FILE`, which must succeed: the file's NDJSON (all apis if `apis` is empty).
async fn export(storage: &Storage, apis: &[ApiId]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut words = vec!["export", "-o", file.path().to_str().expect("a UTF-8 path")];
    for api in apis {
        words.extend(["--api", api.as_str()]);
    }
    run_ok(storage, &words).await;
    std::fs::read_to_string(file.path()).expect("the export is UTF-8")
}

/// `import -i FILE` of `ndjson`, whatever the outcome.
async fn import(storage: &Storage, ndjson: &str) -> Output {
    import_bytes(storage, ndjson.as_bytes()).await
}

/// [`import`] of a file that need not be UTF-8.
async fn import_bytes(storage: &Storage, bytes: &[u8]) -> Output {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    run(storage, &["import", "-i", file.path().to_str().unwrap()]).await
}

/// [`import`], which must succeed.
async fn import_ok(storage: &Storage, ndjson: &str) {
    let out = import(storage, ndjson).await;
    assert_succeeded(&["import"], &out);
}

/// `count` sessions seeded from `rng_seed` into `tenant` of a fresh store, exported: the api's
/// lines.
async fn seeded_export(api: ApiId, tenant: &str, count: usize, rng_seed: u64) -> Vec<String> {
    let storage = Storage::new().await;
    seed(&storage, api, tenant, count, rng_seed).await;
    lines(&export(&storage, &[api]).await)
}

// ---- NDJSON -------------------------------------------------------------------------------------

fn lines(ndjson: &str) -> Vec<String> {
    ndjson.lines().map(str::to_owned).collect()
}

/// Lines back into a file.
fn file(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

fn is_session(line: &str) -> bool {
    record(line)["kind"] == "session"
}

fn session_id(line: &str) -> String {
    record(line)["session"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a session line without an id: {line}"))
        .to_owned()
}

/// The session lines of an export.
fn session_lines(ndjson: &str) -> Vec<String> {
    ndjson
        .lines()
        .filter(|l| is_session(l))
        .map(str::to_owned)
        .collect()
}

/// The ids of every session of `api` in the store.
async fn stored_session_ids(storage: &Storage, api: ApiId) -> BTreeSet<String> {
    session_lines(&export(storage, &[api]).await)
        .iter()
        .map(|l| session_id(l))
        .collect()
}

/// `line` with its record changed by `edit`.
fn edited(line: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut value = record(line);
    edit(&mut value);
    value.to_string()
}

/// Byte equality of two NDJSON texts, reporting the first line that differs.
#[track_caller]
fn assert_same_ndjson(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    match actual
        .lines()
        .zip(expected.lines())
        .position(|(a, e)| a != e)
    {
        Some(i) => panic!(
            "{what}: line {} differs\n     got: {}\nexpected: {}",
            i + 1,
            actual.lines().nth(i).unwrap(),
            expected.lines().nth(i).unwrap()
        ),
        None => panic!(
            "{what}: {} bytes in {} lines, expected {} bytes in {} lines",
            actual.len(),
            actual.lines().count(),
            expected.len(),
            expected.lines().count()
        ),
    }
}

// ---- seed ---------------------------------------------------------------------------------------

/// Sessions seeded per api and run: every one is read back through the public API.
const SEEDED: usize = 50;

async fn seed_creates_the_tenant_and_contract_valid_sessions(api: ApiId) {
    let storage = Storage::new().await;
    let tenant = api.profile().new_tenant_id();
    let out = seed(&storage, api, &tenant, SEEDED, 7).await;
    assert_summary(&out, &format!("seeded 1 tenant, 0 keys, {SEEDED} sessions"));
    // Into the tenant that exists now: more sessions, no new tenant.
    let out = seed(&storage, api, &tenant, SEEDED, 8).await;
    assert_summary(
        &out,
        &format!("seeded 0 tenants, 0 keys, {SEEDED} sessions"),
    );

    let server = TestServer::start_in(storage).await;
    let tenants = server
        .admin(Method::GET, &format!("/admin/v1/{api}/tenants"), None)
        .await
        .expect(200)
        .json();
    assert_eq!(tenants["items"].as_array().unwrap().len(), 1, "{tenants}");
    assert_eq!(tenants["items"][0]["id"], tenant.as_str(), "{tenants}");

    let (_, key) = server.create_key(api, &tenant).await;
    let listed = server.list_all(api, &tenant, 1000).await;
    assert_eq!(listed.len(), 2 * SEEDED, "{api}: sessions after two seeds");
    for session in &listed {
        let id = session["id"].as_str().expect("a listed session has an id");
        // `public_get` checks the body against the vendor's contract.
        let got = server.public_get(api, id, Some(&key)).await.expect(200);
        assert_eq!(
            &got.json(),
            session,
            "{api}: GET {id} and the listing differ"
        );
    }
}

/// A seed that repeats one the store holds (same tenant, same `--seed`: the same ids) fails at its
/// first session, named, with a hint, and leaves the store as it was, OpenCX's ticket sequence
/// included. The tenant named in upper case is the same tenant. On SQLite it is a bulk load (as
/// many sessions as the store holds), whose ids are checked only as it ends.
async fn a_seed_of_ids_the_store_holds_names_the_first_and_changes_nothing() {
    let storage = Storage::new().await;
    let tenant = ApiId::Opencx.profile().new_tenant_id();
    seed(&storage, ApiId::Opencx, &tenant, SEEDED, 3).await;
    let before = export(&storage, &[]).await;
    let count = SEEDED.to_string();
    let upper = tenant.to_ascii_uppercase();
    let words = [
        "seed", "--api", "opencx", "--tenant", &upper, "--count", &count, "--seed", "3",
    ];
    let out = run(&storage, &words).await;
    assert!(!out.status.success(), "the seed succeeded");
    let err = stderr(&out);
    assert!(
        err.contains("generated session 1:")
            && err.contains("exists")
            && err.contains("another --seed")
            && !err.contains("line"),
        "{err}"
    );
    assert_same_ndjson(
        &export(&storage, &[]).await,
        &before,
        "the store after the failed seed",
    );
}

async fn the_same_seed_gives_the_same_sessions(api: ApiId) {
    let tenant = api.profile().new_tenant_id();
    let sessions = async |seed| {
        let lines = seeded_export(api, &tenant, 20, seed).await;
        session_lines(&file(&lines))
    };
    let first = sessions(7).await;
    assert_eq!(first.len(), 20);
    assert_eq!(sessions(7).await, first, "{api}: seed 7 twice");
    let other: BTreeSet<String> = sessions(8).await.into_iter().collect();
    let shared: Vec<&String> = first.iter().filter(|l| other.contains(*l)).collect();
    assert!(
        shared.is_empty(),
        "{api}: seeds 7 and 8 gave the same sessions: {shared:?}"
    );

    // Another tenant seeded with the same seed into the same store gets ids of its own.
    let storage = Storage::new().await;
    let second = api.profile().new_tenant_id();
    seed(&storage, api, &tenant, 20, 7).await;
    seed(&storage, api, &second, 20, 7).await;
    assert_eq!(stored_session_ids(&storage, api).await.len(), 40);
}

// ---- export → import ----------------------------------------------------------------------------

/// What one api held before the export: a tenant with seeded sessions and two keys, one revoked.
struct Before {
    api: ApiId,
    tenant: String,
    live_key: String,
    revoked_key: String,
    /// The tenant's sessions, as the admin API listed them.
    sessions: Vec<Value>,
}

/// Per api: a tenant with `SEEDED` seeded sessions and one written through the admin API, a live
/// and a revoked key, and a second tenant with a key and no sessions.
async fn populate() -> (Storage, Vec<Before>) {
    let storage = Storage::new().await;
    let tenants: Vec<(ApiId, String)> = ApiId::ALL
        .into_iter()
        .map(|api| (api, api.profile().new_tenant_id()))
        .collect();
    for (api, tenant) in &tenants {
        seed(&storage, *api, tenant, SEEDED, 1).await;
    }
    let server = TestServer::start_in(storage).await;
    let mut before = Vec::new();
    for (api, tenant) in tenants {
        server
            .new_session(api, &tenant, &fixtures::labelled(api, "admin-written"))
            .await;
        let (_, live_key) = server.create_key(api, &tenant).await;
        let (revoked_id, revoked_key) = server.create_key(api, &tenant).await;
        server.revoke_key(api, &tenant, &revoked_id).await;
        let empty = server.create_tenant(api).await;
        server.create_key(api, &empty).await;
        before.push(Before {
            api,
            sessions: server.list_all(api, &tenant, 1000).await,
            tenant,
            live_key,
            revoked_key,
        });
    }
    (server.stop().await, before)
}

fn tickets(sessions: &[Value]) -> Vec<i64> {
    sessions
        .iter()
        .map(|s| {
            s["ticket_number"]
                .as_i64()
                .unwrap_or_else(|| panic!("an OpenCX session without a ticket: {s}"))
        })
        .collect()
}

/// A new OpenCX session of `tenant` gets the ticket after the highest of `sessions`.
async fn assert_next_ticket_follows(server: &Client, tenant: &str, sessions: &[Value]) {
    let highest = tickets(sessions).into_iter().max().expect("some tickets");
    let next = server
        .create_session(ApiId::Opencx, tenant, &json!({}))
        .await
        .expect(201)
        .json();
    assert_eq!(next["ticket_number"], highest + 1, "{next}");
}

async fn export_import_export_is_byte_identical() {
    let (source, _) = populate().await;
    let everything = export(&source, &[]).await;
    let restored = Storage::new().await;
    import_ok(&restored, &everything).await;
    assert_same_ndjson(&export(&restored, &[]).await, &everything, "all apis");
    for api in ApiId::ALL {
        let one = export(&source, &[api]).await;
        let fresh = Storage::new().await;
        import_ok(&fresh, &one).await;
        assert_same_ndjson(&export(&fresh, &[api]).await, &one, api.as_str());
    }
}

/// Import reads a session line's document as text and parses it where it is checked: what it
/// stores is the document, not the text. Lines with their fields in another order and spaces
/// everywhere give the same store, byte for byte, as the export they were made from.
async fn a_session_line_in_another_layout_imports_as_its_export() {
    let (source, _) = populate().await;
    let everything = export(&source, &[]).await;
    let relaid: Vec<String> = lines(&everything)
        .iter()
        .map(|line| {
            if !is_session(line) {
                return line.clone();
            }
            let r = record(line);
            // Pretty-printed on one line: JSON strings escape their own newlines.
            let session = serde_json::to_string_pretty(&r["session"])
                .unwrap()
                .replace('\n', " ");
            format!(
                "{{ \"session\" : {session} , \"tenant\" : {}, \"api\" : {} , \"kind\" : \"session\" }}",
                r["tenant"], r["api"]
            )
        })
        .collect();
    assert_ne!(file(&relaid), everything);
    let restored = Storage::new().await;
    import_ok(&restored, &file(&relaid)).await;
    assert_same_ndjson(&export(&restored, &[]).await, &everything, "relaid lines");
}

/// Lines in the export's own layout are taken apart without reading the document first (its
/// one reading is where it is checked); a tenant written with an escape goes the general way. Both
/// give the same store, byte for byte, as the export: a document with spaces in it, and a tenant
/// whose first letter is a `\u` escape.
async fn export_layout_lines_with_spaces_or_escapes_import_as_their_export() {
    let (source, _) = populate().await;
    let everything = export(&source, &[]).await;
    fn spaced(line: &str) -> (Value, String) {
        let r = record(line);
        let session = serde_json::to_string_pretty(&r["session"])
            .unwrap()
            .replace('\n', " ");
        (r, session)
    }
    type Relayout = (&'static str, fn(&str) -> String);
    let variants: [Relayout; 2] = [
        ("documents with spaces", |line| {
            let (r, session) = spaced(line);
            format!(
                r#"{{"kind":"session","api":{},"tenant":{},"session":{session}}}"#,
                r["api"], r["tenant"]
            )
        }),
        ("tenants with an escape", |line| {
            let (r, session) = spaced(line);
            let tenant = r["tenant"].as_str().unwrap();
            let first = tenant.chars().next().unwrap();
            format!(
                r#"{{"kind":"session","api":{},"tenant":"\u{:04x}{}","session":{session}}}"#,
                r["api"],
                first as u32,
                &tenant[first.len_utf8()..]
            )
        }),
    ];
    for (what, relay) in variants {
        let relaid: Vec<String> = lines(&everything)
            .iter()
            .map(|line| {
                if is_session(line) {
                    relay(line)
                } else {
                    line.clone()
                }
            })
            .collect();
        assert_ne!(file(&relaid), everything, "{what}");
        let restored = Storage::new().await;
        import_ok(&restored, &file(&relaid)).await;
        assert_same_ndjson(&export(&restored, &[]).await, &everything, what);
    }
}

/// The sessions (as JSON: their bytes are the concern of the test above), the keys (their hashes
/// travelled: keys made before the export work, or stay revoked, on the import), and OpenCX's
/// ticket numbering survive export → import.
async fn an_import_keeps_sessions_keys_revocations_and_tickets() {
    let (source, before) = populate().await;
    let restored = Storage::new().await;
    import_ok(&restored, &export(&source, &[]).await).await;

    let server = TestServer::start_in(restored).await;
    for b in &before {
        let api = b.api;
        assert_eq!(
            server.list_all(api, &b.tenant, 1000).await,
            b.sessions,
            "{api}: the listing changed"
        );
        let id = b.sessions[0]["id"].as_str().unwrap();
        let got = server.public_get(api, id, Some(&b.live_key)).await;
        assert_eq!(got.expect(200).json(), b.sessions[0], "{api}: GET {id}");
        server
            .public_get(api, id, Some(&b.revoked_key))
            .await
            .expect(401);
    }
    let opencx = before.iter().find(|b| b.api == ApiId::Opencx).unwrap();
    let numbered: Vec<i64> = (1..=SEEDED as i64 + 1).collect();
    assert_eq!(tickets(&opencx.sessions), numbered, "seeded, then written");
    assert_next_ticket_follows(&server, &opencx.tenant, &opencx.sessions).await;
}

/// A hand-made file need not carry the tenant's `seq`: the numbering continues after the highest
/// imported ticket all the same.
async fn imported_tickets_continue_after_the_highest_without_a_sequence_field() {
    let tenant = ApiId::Opencx.profile().new_tenant_id();
    let without_seq: Vec<String> = seeded_export(ApiId::Opencx, &tenant, 30, 3)
        .await
        .iter()
        .map(|l| edited(l, |r| _ = r.as_object_mut().unwrap().remove("seq")))
        .collect();
    let storage = Storage::new().await;
    import_ok(&storage, &file(&without_seq)).await;
    let server = TestServer::start_in(storage).await;
    let sessions = server.list_all(ApiId::Opencx, &tenant, 1000).await;
    assert_eq!(tickets(&sessions), (1..=30).collect::<Vec<i64>>());
    assert_next_ticket_follows(&server, &tenant, &sessions).await;
}

// ---- import errors ------------------------------------------------------------------------------

/// A way to break a session line of an Anam export.
type Breakage = (&'static str, fn(&str) -> String);

const BREAKAGES: [Breakage; 6] = [
    ("malformed JSON", |l| l[..l.len() - 1].to_owned()),
    // JSON, but not a document a number of which fits in a double.
    ("a number out of range", |l| {
        l.replacen(r#""session":{"#, r#""session":{"x":1e400,"#, 1)
    }),
    ("Anam endTime before startTime", |l| {
        edited(l, |r| {
            r["session"]["startTime"] = json!("2026-01-05T10:00:00.000Z");
            r["session"]["endTime"] = json!("2026-01-05T09:00:00.000Z");
        })
    }),
    ("unknown api", |l| edited(l, |r| r["api"] = json!("stripe"))),
    ("unknown tenant", |l| {
        edited(l, |r| {
            r["tenant"] = json!(ApiId::Anam.profile().new_tenant_id())
        })
    }),
    // The export's layout up to its document, which something follows.
    ("a member after the session", |l| {
        format!(r#"{},"x":1}}"#, &l[..l.len() - 1])
    }),
];

/// `lines` with its `index`-th session line (from 0) replaced by `with(that line)`, and the line
/// number of the replaced line.
fn replace_session(
    lines: &[String],
    index: usize,
    with: impl FnOnce(&str) -> String,
) -> (Vec<String>, usize) {
    let k = session_line(lines, index);
    let mut out = lines.to_vec();
    out[k - 1] = with(&lines[k - 1]);
    (out, k)
}

/// The line number (from 1) of the `index`-th session line (from 0) of `lines`.
fn session_line(lines: &[String], index: usize) -> usize {
    1 + (0..lines.len())
        .filter(|&i| is_session(&lines[i]))
        .nth(index)
        .unwrap_or_else(|| panic!("no session number {index}"))
}

/// The session ids of `lines` in the batches import cuts them into: [`BATCH`] at a time, for a file
/// whose sessions follow all its tenant and key lines.
fn batches(lines: &[String]) -> Vec<BTreeSet<String>> {
    let sessions: Vec<String> = lines
        .iter()
        .filter(|l| is_session(l))
        .map(|l| session_id(l))
        .collect();
    sessions
        .chunks(BATCH)
        .map(|c| c.iter().cloned().collect())
        .collect()
}

/// Importing `broken` (`original` with line `k` broken) into a fresh store fails naming line `k`;
/// of the sessions, at most whole batches before line `k`'s are stored.
async fn assert_import_stops_at(original: &[String], broken: &[String], k: usize, what: &str) {
    let storage = Storage::new().await;
    let err = import_failing(&storage, broken, &format!("{what} at line {k}")).await;
    assert!(
        err.contains(&format!("line {k}:")),
        "{what}: the message does not name line {k}:\n{err}"
    );

    let stored = stored_session_ids(&storage, ApiId::Anam).await;
    let k_id = session_id(&original[k - 1]);
    let mut reached_k = false;
    for (n, batch) in batches(original).iter().enumerate() {
        reached_k |= batch.contains(&k_id);
        let kept = batch.intersection(&stored).count();
        if reached_k {
            assert_eq!(
                kept, 0,
                "{what} at line {k}: {kept} sessions of batch {n} stored"
            );
        } else {
            assert!(
                kept == 0 || kept == batch.len(),
                "{what} at line {k}: batch {n} stored in part ({kept} of {})",
                batch.len()
            );
        }
    }
    let known: BTreeSet<String> = batches(original).into_iter().flatten().collect();
    assert!(stored.is_subset(&known), "{what}: sessions from nowhere");
}

async fn a_broken_line_is_named_and_nothing_of_its_batch_is_stored() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let small = seeded_export(ApiId::Anam, &tenant, 10, 1).await;
    let big = seeded_export(ApiId::Anam, &tenant, BATCH + 500, 2).await;
    // A session in the middle of the only batch, of the first and of the second of two.
    let places: [(&[String], usize); 3] = [(&small, 5), (&big, 100), (&big, BATCH + 100)];
    for (what, breakage) in BREAKAGES {
        for (original, index) in places {
            let (broken, k) = replace_session(original, index, breakage);
            assert_import_stops_at(original, &broken, k, what).await;
        }
    }
}

/// A bad session (an invalid document, an id the file gave before) and, later in its batch, a
/// line that is not JSON or a session of an unknown tenant (found before any document is
/// checked): the import names the first.
async fn the_first_bad_line_is_named_though_a_later_one_is_unreadable() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let original = seeded_export(ApiId::Anam, &tenant, 10, 1).await;
    let earlier = session_lines(&file(&original))[1].clone();
    let (_, invalid) = BREAKAGES[2];
    let (_, malformed) = BREAKAGES[0];
    let unknown_tenant = |l: &str| {
        edited(l, |r| {
            r["tenant"] = json!(ApiId::Anam.profile().new_tenant_id())
        })
    };
    type Edit<'a> = &'a dyn Fn(&str) -> String;
    let firsts: [(&str, Edit); 2] = [
        ("an invalid document", &|l| invalid(l)),
        ("an id given twice", &|_| earlier.clone()),
    ];
    let seconds: [(&str, Edit); 2] = [
        ("an unreadable line", &|l| malformed(l)),
        ("a session of an unknown tenant", &unknown_tenant),
    ];
    for (what_first, first_breakage) in firsts {
        for (what_second, second_breakage) in seconds {
            let what = format!("{what_first}, then {what_second}");
            let (broken, first) = replace_session(&original, 3, first_breakage);
            let (broken, second) = replace_session(&broken, 6, second_breakage);
            assert!(first < second);
            let storage = Storage::new().await;
            let err = import_failing(&storage, &broken, "{what}: the import succeeded").await;
            assert!(
                err.contains(&format!("line {first}:"))
                    && !err.contains(&format!("line {second}:")),
                "{what}: the message does not name line {first} alone:\n{err}"
            );
            assert!(stored_session_ids(&storage, ApiId::Anam).await.is_empty());
        }
    }
}

/// A line with a byte that is not UTF-8 is named as such, but a bad session before it (read in the
/// same chunk) is named first; nothing of the batch is stored either way.
async fn a_line_that_is_not_utf8_is_named_unless_a_bad_line_comes_before_it() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let original = seeded_export(ApiId::Anam, &tenant, 10, 1).await;
    // Line `k` (from 1) of `lines` with a 0xFF byte inside its first string.
    let with_bad_byte = |lines: &[String], k: usize| -> Vec<u8> {
        let mut bytes = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let mut line = line.clone().into_bytes();
            if i + 1 == k {
                line.insert(2, 0xFF);
            }
            bytes.extend(line);
            bytes.push(b'\n');
        }
        bytes
    };
    let (_, invalid) = BREAKAGES[2];
    let unreadable = session_line(&original, 6);
    let alone = with_bad_byte(&original, unreadable);
    let (broken, first) = replace_session(&original, 3, invalid);
    let after_a_bad_session = with_bad_byte(&broken, unreadable);
    for (bytes, named, what) in [
        (alone, unreadable, "the line that is not UTF-8"),
        (after_a_bad_session, first, "the invalid session before it"),
    ] {
        let storage = Storage::new().await;
        let out = import_bytes(&storage, &bytes).await;
        assert!(!out.status.success(), "{what}: the import succeeded");
        let err = stderr(&out);
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("sessiond: "))
            .collect();
        assert!(
            errors.len() == 1 && errors[0].contains(&format!("line {named}:")),
            "{what}: the message does not name line {named} alone:\n{err}"
        );
        if named == unreadable {
            assert!(errors[0].contains("not UTF-8"), "{what}: {err}");
        }
        assert!(stored_session_ids(&storage, ApiId::Anam).await.is_empty());
    }
}

/// A file shorter than one batch is stored whole or not at all, though it holds several apis (so
/// tenant lines stand between its sessions).
async fn a_broken_line_in_a_file_shorter_than_a_batch_stores_none_of_its_sessions() {
    const PER_API: usize = 10;
    let storage = Storage::new().await;
    for api in ApiId::ALL {
        seed(&storage, api, &api.profile().new_tenant_id(), PER_API, 1).await;
    }
    let everything = lines(&export(&storage, &[]).await);
    assert!(everything.len() < BATCH);
    let (_, malformed) = BREAKAGES[0];
    let last_session = ApiId::ALL.len() * PER_API - 1;
    let (broken, k) = replace_session(&everything, last_session, malformed);
    assert_eq!(k, everything.len(), "the last line is an Anam session");

    let fresh = Storage::new().await;
    let err = import_failing(&fresh, &broken, "the import succeeded").await;
    assert!(err.contains(&format!("line {k}:")), "{err}");
    let stored = session_lines(&export(&fresh, &[]).await);
    assert!(
        stored.is_empty(),
        "{} sessions of a {}-line file stored, though its line {k} is broken",
        stored.len(),
        broken.len()
    );
}

/// Lines are read in chunks: a bad line that opens the file (so the chunk before it is empty) is
/// still named, and a run of blank lines longer than a chunk is skipped like a short one.
async fn a_broken_first_line_is_named_and_blank_lines_are_skipped() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let original = seeded_export(ApiId::Anam, &tenant, 10, 1).await;

    let mut broken = original.clone();
    broken[0] = "{\"kind\":".into();
    let storage = Storage::new().await;
    let err = import_failing(&storage, &broken, "the import succeeded").await;
    assert!(
        err.contains("line 1:"),
        "the message does not name line 1:\n{err}"
    );
    assert!(session_lines(&export(&storage, &[]).await).is_empty());

    let mut spaced = vec![String::new(); 3000];
    spaced.extend(original.iter().cloned());
    spaced.push(String::new());
    let storage = Storage::new().await;
    import_ok(&storage, &file(&spaced)).await;
    assert_same_ndjson(
        &export(&storage, &[]).await,
        &file(&original),
        "blank lines",
    );
}

async fn an_existing_session_id_is_named_and_nothing_of_its_batch_is_stored() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let first = seeded_export(ApiId::Anam, &tenant, 10, 1).await;
    let second = seeded_export(ApiId::Anam, &tenant, 10, 2).await;
    let storage = Storage::new().await;
    import_ok(&storage, &file(&first)).await;
    let before = export(&storage, &[]).await;

    let stored_line = session_lines(&file(&first))[3].clone();
    let earlier_line = session_lines(&file(&second))[2].clone();
    let cases = [
        ("a session of the store again", stored_line),
        ("a session of the file twice", earlier_line),
    ];
    for (what, duplicate) in cases {
        let (file_lines, k) = replace_session(&second, 6, |_| duplicate);
        let err = import_failing(&storage, &file_lines, "{what}: the import succeeded").await;
        assert!(err.contains(&format!("line {k}:")), "{what}: {err}");
        assert_same_ndjson(&export(&storage, &[]).await, &before, what);
    }
}

/// Into an empty store (on SQLite a bulk load: ids are checked once every batch is in), a session id
/// given twice in the file is named though a later line is bad too; the batches before the one
/// holding its second line are kept whole, nothing after; and the ids are unique again afterwards.
async fn an_id_twice_in_a_file_for_an_empty_store_is_named_and_the_batches_before_it_are_kept() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let original = seeded_export(ApiId::Anam, &tenant, 2 * BATCH + 100, 4).await;
    let batches = batches(&original);
    let earlier = session_lines(&file(&original))[10].clone();
    let (broken, k) = replace_session(&original, BATCH + 20, |_| earlier);
    let (_, invalid) = BREAKAGES[2];
    let (broken, later) = replace_session(&broken, 2 * BATCH + 50, invalid);

    let storage = Storage::new().await;
    let err = import_failing(&storage, &broken, "the import succeeded").await;
    assert!(
        err.contains(&format!("line {k}:")) && err.contains("exists"),
        "names the duplicate at line {k}: {err}"
    );
    assert!(!err.contains(&format!("line {later}:")), "{err}");
    assert_eq!(stored_session_ids(&storage, ApiId::Anam).await, batches[0]);

    let err = import_failing(&storage, &original, "the stored ids taken again").await;
    let first = session_line(&original, 0);
    assert!(err.contains(&format!("line {first}:")), "{err}");
    assert_eq!(stored_session_ids(&storage, ApiId::Anam).await, batches[0]);
}

/// A full batch whose session is already stored (found when the batch is stored, not when it is
/// checked), then a bad tenant line, read while that batch is being stored: the import names the
/// session, the earlier line, and stores nothing of its batch.
async fn a_batch_that_cannot_be_stored_is_named_though_a_later_tenant_line_is_bad() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let first = seeded_export(ApiId::Anam, &tenant, 10, 1).await;
    let second = seeded_export(ApiId::Anam, &tenant, BATCH, 2).await;
    let storage = Storage::new().await;
    import_ok(&storage, &file(&first)).await;
    let before = export(&storage, &[]).await;

    let stored_line = session_lines(&file(&first))[3].clone();
    let (mut file_lines, k) = replace_session(&second, 100, |_| stored_line);
    let tenant_line = first
        .iter()
        .find(|l| record(l)["kind"] == "tenant")
        .expect("the export starts with its tenant");
    file_lines.push(edited(tenant_line, |r| r["id"] = json!("not a tenant id")));
    let bad_tenant = file_lines.len();
    assert_eq!(
        file_lines.iter().filter(|l| is_session(l)).count(),
        BATCH,
        "the sessions fill one batch, stored once the tenant line is read"
    );

    let err = import_failing(&storage, &file_lines, "the import succeeded").await;
    assert!(
        err.contains(&format!("line {k}:")),
        "names line {k}, not the tenant's {bad_tenant}: {err}"
    );
    assert_same_ndjson(
        &export(&storage, &[]).await,
        &before,
        "the store after the failed import",
    );
}

/// A tenant's `seq` or a restored OpenCX `ticket_number` that the sequence could not have handed
/// out (one past the largest would overflow the next number, which broke every later create of
/// the tenant) is refused with its line, and nothing of it is stored.
async fn sequence_numbers_out_of_range_are_refused_on_import() {
    let api = ApiId::Opencx;
    let tenant = api.profile().new_tenant_id();
    let original = seeded_export(api, &tenant, 3, 1).await;
    let tenant_at = original
        .iter()
        .position(|l| record(l)["kind"] == "tenant")
        .expect("a tenant line");
    for seq in [json!(-1), json!(9_007_199_254_740_992_i64), json!(i64::MAX)] {
        let mut broken = original.clone();
        broken[tenant_at] = edited(&broken[tenant_at], |r| r["seq"] = seq.clone());
        import_refused_at(&broken, tenant_at + 1, "seq").await;
    }
    for ticket in [
        json!(0),
        json!(-3),
        json!(1.5),
        json!(9_007_199_254_740_992_i64),
    ] {
        let (broken, k) = replace_session(&original, 1, |line| {
            edited(line, |r| r["session"]["ticket_number"] = ticket.clone())
        });
        let storage = import_refused_at(&broken, k, "ticket_number").await;
        assert!(stored_session_ids(&storage, api).await.is_empty());
    }
    // The largest number the sequence hands out imports.
    let (edge, _) = replace_session(&original, 1, |line| {
        edited(line, |r| {
            r["session"]["ticket_number"] = json!(9_007_199_254_740_991_i64)
        })
    });
    let storage = Storage::new().await;
    import_ok(&storage, &file(&edge)).await;
}

/// An import that gives some OpenCX sessions their ticket numbers and leaves them out of others
/// (a fixture file, not an export): the numbers it hands out follow the restored ones, wherever
/// those stand in the file, so no number is given twice; the tenant's sequence goes on after
/// the highest.
async fn an_import_numbers_new_tickets_after_the_restored_ones() {
    let api = ApiId::Opencx;
    let tenant = api.profile().new_tenant_id();
    let original = seeded_export(api, &tenant, 5, 1).await;
    // Sessions 0 and 1 to be numbered, 2 to 4 restored with 1 to 3 (in reverse); no tenant line.
    let mut mixed: Vec<String> = original.iter().filter(|l| is_session(l)).cloned().collect();
    for (i, line) in mixed.iter_mut().enumerate() {
        *line = edited(line, |r| match i {
            0 | 1 => {
                r["session"]
                    .as_object_mut()
                    .unwrap()
                    .remove("ticket_number");
            }
            _ => r["session"]["ticket_number"] = json!(5 - i),
        });
    }
    let storage = Storage::new().await;
    run_ok(
        &storage,
        &["tenants", "create", "--api", "opencx", "--id", &tenant],
    )
    .await;
    import_ok(&storage, &file(&mixed)).await;
    let exported = lines(&export(&storage, &[api]).await);
    let mut tickets: Vec<i64> = exported
        .iter()
        .filter(|l| is_session(l))
        .map(|l| record(l)["session"]["ticket_number"].as_i64().unwrap())
        .collect();
    tickets.sort_unstable();
    assert_eq!(tickets, [1, 2, 3, 4, 5], "{exported:#?}");
    let tenant_line = exported.iter().find(|l| record(l)["kind"] == "tenant");
    assert_eq!(record(tenant_line.unwrap())["seq"], json!(5));
}

/// A SaleSnip `url` is derived from `--salesnip-url-base`, which the server that wrote an export
/// may have set otherwise: an import keeps a url that ends with its session's id as it was, and
/// refuses one that names another session. The url stays as it was on later updates too: a
/// patch keeps it, and the admin GET's body sent back with PUT is accepted.
async fn a_salesnip_url_of_another_base_is_restored_as_it_was() {
    let api = ApiId::Salesnip;
    let original = seeded_export(api, &api.profile().new_tenant_id(), 3, 1).await;
    let rebased = |line: &str, base: &str| {
        edited(line, |r| {
            let id = r["session"]["id"].as_str().unwrap().to_owned();
            let short = id.strip_prefix("session_").unwrap().to_owned();
            r["session"]["url"] = json!(format!("{base}{short}"));
        })
    };
    let (moved, _) = replace_session(&original, 0, |l| {
        rebased(l, "https://negotiate.example.com/#")
    });
    let storage = Storage::new().await;
    import_ok(&storage, &file(&moved)).await;
    assert_same_ndjson(
        &export(&storage, &[]).await,
        &file(&moved),
        "another url base",
    );
    let restored = record(&moved[session_line(&moved, 0) - 1])["session"].clone();
    let id = restored["id"].as_str().unwrap().to_owned();
    let server = TestServer::start_in(storage).await;
    let patched = server
        .patch_session(api, &id, json!({ "status": "COMPLETE" }))
        .await
        .expect(200)
        .json();
    assert_eq!(patched["url"], restored["url"], "a patch rewrote the url");
    let read = server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(200);
    let put = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/{api}/sessions/{id}"),
            Some(read.json()),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        put["url"], restored["url"],
        "a PUT of the GET body changed the url"
    );

    let (wrong, k) = replace_session(&original, 1, |l| {
        edited(l, |r| {
            r["session"]["url"] = json!("https://negotiate.example.com/#other")
        })
    });
    import_refused_at(&wrong, k, "/url").await;
}

/// An admin write takes a `null` for a field the server fills as "not set" and a tenant's UUID in
/// upper case as its own; an import restores what it reads, so there they are what they say: a
/// null id or creation time, or the tenant in another spelling, is refused at its line, and Anam's
/// nullable `updatedAt` stays null.
async fn an_import_restores_nulls_and_spellings_as_they_are_written() {
    let api = ApiId::Anam;
    let tenant = api.profile().new_tenant_id();
    let original = seeded_export(api, &tenant, 3, 1).await;
    for (what, field, value) in [
        ("a null id", "id", Value::Null),
        ("a null creation time", "createdAt", Value::Null),
        (
            "the tenant in upper case",
            "organizationId",
            json!(tenant.to_ascii_uppercase()),
        ),
    ] {
        let (changed, k) = replace_session(&original, 1, |l| {
            edited(l, |r| r["session"][field] = value.clone())
        });
        eprintln!("{what}");
        import_refused_at(&changed, k, &format!("/{field}")).await;
    }
    let (never_updated, k) = replace_session(&original, 1, |l| {
        edited(l, |r| r["session"]["updatedAt"] = Value::Null)
    });
    let storage = Storage::new().await;
    import_ok(&storage, &file(&never_updated)).await;
    let restored = lines(&export(&storage, &[api]).await);
    assert_eq!(
        record(&restored[k - 1])["session"].get("updatedAt"),
        Some(&Value::Null),
        "{}",
        restored[k - 1]
    );
}

/// Keys are stored once the sessions before them are: of an import that stops at a bad session
/// line, a key read after it (in the same batch, checked later) is not stored and so does not
/// work; one read before it is, like its tenant.
async fn a_key_read_after_a_bad_line_is_not_stored() {
    let source = Storage::new().await;
    for api in [ApiId::Opencx, ApiId::Anam] {
        let tenant = api.profile().new_tenant_id();
        seed(&source, api, &tenant, 3, 1).await;
        let words = ["keys", "create", "--api", api.as_str(), "--tenant", &tenant];
        run_ok(&source, &words).await;
    }
    let original = lines(&export(&source, &[ApiId::Opencx, ApiId::Anam]).await);
    let key_lines: Vec<usize> = (0..original.len())
        .filter(|&i| record(&original[i])["kind"] == "key")
        .map(|i| i + 1)
        .collect();
    // Found when its batch is checked, after the lines that follow it were read.
    let (_, out_of_range) = BREAKAGES[1];
    let (broken, k) = replace_session(&original, 1, out_of_range);
    assert!(
        key_lines[0] < k && k < key_lines[1],
        "a key on each side of line {k}: {key_lines:?}"
    );

    let key_ids = |ndjson: &[String]| -> Vec<Value> {
        ndjson
            .iter()
            .map(|l| record(l))
            .filter(|r| r["kind"] == "key")
            .map(|r| r["id"].clone())
            .collect()
    };
    // Also when a bad tenant line after them stops the import before the batch is checked.
    let tenant_line = original
        .iter()
        .find(|l| record(l)["kind"] == "tenant")
        .unwrap();
    let mut then_bad_tenant = broken.clone();
    then_bad_tenant.push(edited(tenant_line, |r| r["seq"] = json!(-1)));
    for file_lines in [broken, then_bad_tenant] {
        let storage = Storage::new().await;
        let err = import_failing(&storage, &file_lines, "the import succeeded").await;
        assert!(err.contains(&format!("line {k}:")), "{err}");
        let kept = key_ids(&lines(&export(&storage, &[]).await));
        assert_eq!(
            kept,
            key_ids(&original[..k]),
            "only the key before line {k}"
        );
    }
}

/// A key line whose id the store already gives to another key (another hash) is named when it is
/// read, like one whose hash is taken: the import stops there, before the sessions after it are
/// stored (it was found only once every session was).
async fn a_key_whose_id_is_taken_is_named_before_any_session_is_stored() {
    let api = ApiId::Opencx;
    let source = Storage::new().await;
    let tenant = api.profile().new_tenant_id();
    seed(&source, api, &tenant, 3, 1).await;
    run_ok(
        &source,
        &["keys", "create", "--api", api.as_str(), "--tenant", &tenant],
    )
    .await;
    let original = lines(&export(&source, &[api]).await);
    let k = 1 + original
        .iter()
        .position(|l| record(l)["kind"] == "key")
        .expect("a key line");
    assert!(
        k < session_line(&original, 0),
        "the key before the sessions"
    );

    // The store holds the tenant and the key; the file gives the key's id another hash.
    let target = Storage::new().await;
    let own: Vec<String> = original
        .iter()
        .filter(|l| record(l)["kind"] != "session")
        .cloned()
        .collect();
    import_ok(&target, &file(&own)).await;
    let mut taken = original.clone();
    taken[k - 1] = edited(&original[k - 1], |r| r["hash"] = json!("ab".repeat(32)));
    let err = import_failing(&target, &taken, "a taken key id").await;
    assert!(
        err.contains(&format!("line {k}:")) && err.contains("clashes"),
        "line {k}: {err}"
    );
    assert_same_ndjson(
        &export(&target, &[api]).await,
        &file(&own),
        "after the refused import",
    );
}

/// Input with no newline (a binary file, `/dev/zero`) is not read into memory whole: the line
/// past `MAX_LINE` bytes is named, and nothing of its batch is stored.
async fn a_line_longer_than_the_limit_is_named_not_read_whole() {
    let tenant = ApiId::Anam.profile().new_tenant_id();
    let original = seeded_export(ApiId::Anam, &tenant, 3, 1).await;
    let max = sessiond::bulk::MAX_LINE;
    // Zero bytes; and text whose limit falls inside a two-byte character (it was named "not
    // UTF-8").
    let cut_inside = ["a".to_owned(), "é".repeat(max / 2)].concat().into_bytes();
    assert!(std::str::from_utf8(&cut_inside[..max]).is_err());
    for long_line in [vec![0; max + 1], cut_inside] {
        let mut bytes = file(&original).into_bytes();
        bytes.extend(long_line);
        let storage = Storage::new().await;
        let out = import_bytes(&storage, &bytes).await;
        assert!(!out.status.success(), "the import succeeded");
        let err = stderr(&out);
        let k = original.len() + 1;
        assert!(
            err.contains(&format!("line {k}: longer than 64 MiB")),
            "{err}"
        );
        assert!(stored_session_ids(&storage, ApiId::Anam).await.is_empty());
    }
}

/// Imports `lines` into `storage`, which must fail (`what` names the case): what it printed.
async fn import_failing(storage: &Storage, lines: &[String], what: &str) -> String {
    let out = import(storage, &file(lines)).await;
    assert!(!out.status.success(), "{what}: the import succeeded");
    stderr(&out)
}

/// Imports `lines` into a new store, which must refuse line `k` with a message naming `about`.
async fn import_refused_at(lines: &[String], k: usize, about: &str) -> Storage {
    let storage = Storage::new().await;
    let err = import_failing(&storage, lines, &format!("line {k} ({about})")).await;
    assert!(
        err.contains(&format!("line {k}:")) && err.contains(about),
        "line {k}, {about}: {err}"
    );
    storage
}

async fn an_api_named_twice_is_exported_once() {
    let storage = Storage::new().await;
    seed(
        &storage,
        ApiId::Anam,
        &ApiId::Anam.profile().new_tenant_id(),
        3,
        1,
    )
    .await;
    let once = export(&storage, &[ApiId::Anam]).await;
    let twice = export(&storage, &[ApiId::Anam, ApiId::Anam]).await;
    assert_same_ndjson(&twice, &once, "--api anam --api anam");
}

/// The tools that only read a store refuse a data dir without one (a mistyped `--data-dir`)
/// rather than create an empty store and report on it; an import whose input cannot be opened
/// leaves no store behind either.
#[tokio::test]
async fn a_missing_store_is_an_error_not_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let typo = typo.to_str().unwrap();
    for words in [
        vec!["export", "-o", "-"],
        vec!["tenants", "list", "--api", "anam"],
        vec!["keys", "list", "--api", "anam", "--tenant", "t"],
    ] {
        let mut args = words.clone();
        args.extend(["--data-dir", typo]);
        let out = cli(&args).await;
        assert!(!out.status.success(), "{words:?} succeeded");
        assert!(
            stderr(&out).contains("no store at"),
            "{words:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{words:?} wrote to stdout");
    }
    let missing = dir.path().join("missing.ndjson");
    let out = cli(&[
        "import",
        "-i",
        missing.to_str().unwrap(),
        "--data-dir",
        typo,
    ])
    .await;
    assert!(
        !out.status.success(),
        "the import of a missing file succeeded"
    );
    assert!(
        !std::path::Path::new(typo).exists(),
        "a failed command left {typo} behind"
    );
}

// ---- stdin and stdout ---------------------------------------------------------------------------

async fn import_reads_stdin_and_export_writes_only_ndjson_to_stdout() {
    let source = Storage::new().await;
    let tenant = ApiId::Anam.profile().new_tenant_id();
    seed(&source, ApiId::Anam, &tenant, 20, 1).await;
    let out = run_ok(&source, &["export", "-o", "-"]).await;
    assert_summary(&out, "exported 1 tenant, 0 keys, 20 sessions");
    let ndjson = String::from_utf8(out.stdout).expect("UTF-8 NDJSON");
    for line in ndjson.lines() {
        assert!(record(line)["kind"].is_string(), "not a record: {line}");
    }
    assert_same_ndjson(&ndjson, &export(&source, &[]).await, "stdout and file");

    let target = Storage::new().await;
    let words = ["import", "-i", "-"];
    let out = run_with_input(&target, &words, &ndjson).await;
    assert_succeeded(&words, &out);
    assert!(out.stdout.is_empty(), "import wrote to stdout");
    assert_summary(&out, "imported 1 tenant, 0 keys, 20 sessions");
    assert_same_ndjson(&export(&target, &[]).await, &ndjson, "imported from stdin");
}

// ---- ?fill=true ---------------------------------------------------------------------------------

/// Generated sessions per api and run.
const FILLS: usize = 10;

async fn create_filled(
    server: &Client,
    api: ApiId,
    tenant: &str,
    query: &str,
    doc: &Value,
) -> Reply {
    let path = format!("/admin/v1/{api}/tenants/{tenant}/sessions?{query}");
    server.admin(Method::POST, &path, Some(doc.clone())).await
}

/// `?fill=true` with `given` → 201 with a contract-valid session, which the body is.
async fn fill(server: &Client, api: ApiId, tenant: &str, key: &str, given: &Value) -> Value {
    let created = create_filled(server, api, tenant, "fill=true", given)
        .await
        .expect(201);
    let body = created.json();
    let id = body["id"].as_str().expect("a session id");
    // `public_get` checks the body against the vendor's contract.
    let got = server.public_get(api, id, Some(key)).await.expect(200);
    assert_eq!(got.body, created.body, "{api}: GET {id} and the 201 differ");
    body
}

async fn fill_generates_a_contract_valid_session(api: ApiId) {
    let server = TestServer::start().await;
    let (tenant, key) = server.tenant_with_key(api).await;
    let mut ids = BTreeSet::new();
    for _ in 0..FILLS {
        let body = fill(&server, api, &tenant, &key, &json!({})).await;
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), FILLS, "{api}: generated ids repeat");
    create_filled(&server, api, &tenant, "fill=nope", &json!({}))
        .await
        .expect(400);
}

/// A given array longer than the generated one (which may be empty: a FunnelFox session has 0 to
/// 6 replies) has every element completed, from more generated documents (it was the first
/// element copied, or for an empty one the client's `{}` left as it was: a 422 one fill in
/// seven). Which generated element completes one is drawn, so only completeness is checked.
async fn fill_completes_every_element_of_an_array_longer_than_the_generated_one() {
    let server = TestServer::start().await;
    let api = ApiId::Funnelfox;
    let (tenant, key) = server.tenant_with_key(api).await;
    let mut replies = vec![json!({}); 8];
    replies[2] = json!({ "value": "given" });
    for _ in 0..3 * FILLS {
        let body = fill(&server, api, &tenant, &key, &json!({ "replies": replies })).await;
        let got = body["replies"].as_array().expect("replies");
        assert_eq!(got.len(), replies.len(), "{body}");
        for reply in got {
            for field in ["screen_id", "element_id", "value"] {
                assert!(!reply[field].is_null(), "{field} of {reply}");
            }
        }
        assert_eq!(got[2]["value"], "given", "{body}");
    }
    let api = ApiId::Salesnip;
    let (tenant, key) = server.tenant_with_key(api).await;
    let products = json!({ "products": vec![json!({}); 5] });
    let body = fill(&server, api, &tenant, &key, &products).await;
    assert_eq!(body["products"].as_array().unwrap().len(), 5, "{body}");
}

/// The fields a client gives win over the generated ones, and the generated ones around them
/// follow the vendor's rules that tie them to the given ones: every fill is accepted, not one
/// that happens to draw agreeing values (an exit status given with a generated active session
/// failed a third of the time, an Alcamine `agentId` always: its embedded agent's id differed).
async fn fill_keeps_the_fields_the_client_gave() {
    let old = "2000-01-01T00:00:00.000Z";
    let later = "2030-01-01T00:00:00.000Z";
    let agent = ApiId::Alcamine.profile().new_session_id(); // a cuid2, as agent ids are
    let cases = [
        (
            ApiId::Anam,
            json!({ "clientLabel": "x", "endTime": null }),
            vec![
                ("/endTime", json!(null)),
                ("/exitStatus", json!(null)),
                ("/sessionLengthMs", json!(null)),
            ],
        ),
        (
            ApiId::Anam,
            json!({ "exitStatus": "ERROR" }),
            vec![("/exitStatus", json!("ERROR"))],
        ),
        (
            ApiId::Anam,
            json!({ "endTime": old }),
            vec![("/endTime", json!(old))],
        ),
        (
            ApiId::Anam,
            json!({ "startTime": later }),
            vec![("/startTime", json!(later))],
        ),
        (
            ApiId::Anam,
            json!({ "startTime": old, "endTime": later }),
            vec![("/sessionLengthMs", json!(946_771_200_000_i64))],
        ),
        (
            ApiId::Alcamine,
            json!({ "status": "PENDING" }),
            vec![
                ("/status", json!("PENDING")),
                ("/startedAt", json!(null)),
                ("/completedAt", json!(null)),
            ],
        ),
        (
            ApiId::Alcamine,
            json!({ "agentId": agent }),
            vec![("/agentId", json!(agent)), ("/agent/id", json!(agent))],
        ),
        (
            ApiId::Alcamine,
            json!({ "startedAt": old }),
            vec![("/startedAt", json!(old))],
        ),
        (
            ApiId::Alcamine,
            json!({ "completedAt": later }),
            vec![
                ("/status", json!("COMPLETED")),
                ("/completedAt", json!(later)),
            ],
        ),
        (
            ApiId::Anam,
            json!({ "sessionLengthMs": 5000 }),
            vec![("/sessionLengthMs", json!(5000))],
        ),
        (
            ApiId::Alcamine,
            json!({ "person": { "id": agent } }),
            vec![
                ("/personId", json!(agent)),
                ("/conversation/personId", json!(agent)),
            ],
        ),
        (
            ApiId::Salesnip,
            json!({ "products": [{ "quantity": { "maximum": 2 } }] }),
            vec![("/products/0/quantity/maximum", json!(2))],
        ),
    ];
    let server = TestServer::start().await;
    for (api, given, expected) in cases {
        let (tenant, key) = server.tenant_with_key(api).await;
        // Several times: whatever is generated around them, the given fields win.
        for _ in 0..FILLS {
            let body = fill(&server, api, &tenant, &key, &given).await;
            for (pointer, value) in &expected {
                assert_eq!(
                    body.pointer(pointer),
                    Some(value),
                    "{api} {given}: {pointer} of {body}"
                );
            }
        }
    }
}

// ---- interrupted ---------------------------------------------------------------------------------

/// Sends `signal` (`-INT`, `-TERM`) to `cli` and waits for it to exit with `code`: its stderr,
/// from `log` if that read it.
async fn stopped_by(
    cli: RunningCli,
    signal: &str,
    code: i32,
    log: Option<tokio::task::JoinHandle<String>>,
) -> String {
    cli.signal(signal);
    let out = cli.output().await;
    let err = match log {
        Some(log) => log.await.unwrap(),
        None => stderr(&out),
    };
    assert_eq!(
        out.status.code(),
        Some(code),
        "the exit code after {signal}: {err}"
    );
    err
}

/// Waits (bounded) until the store holds at least `n` sessions of `api`.
async fn until_stored(storage: &Storage, api: ApiId, n: usize) {
    let mut polls = 0;
    while stored_session_ids(storage, api).await.len() < n {
        polls += 1;
        assert!(polls < 1200, "{n} sessions were never stored");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Reads the stderr of a `seed` or `import` run with `sessiond::store::sqlite=debug` until it
/// logs that a bulk load begins (once the store is open: the signals are watched before); then
/// the rest of it, all of it returned by the task.
async fn until_a_bulk_load_begins(cli: &mut RunningCli) -> tokio::task::JoinHandle<String> {
    let mut log = cli.stderr_lines();
    let mut seen = lines_until(&mut log, "a bulk load").await;
    tokio::spawn(async move {
        while let Some(line) = log.next_line().await.unwrap() {
            seen.push(line);
        }
        seen.join("\n")
    })
}

type StderrLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// The lines of `log` up to the first that holds `needle`, that one included.
async fn lines_until(log: &mut StderrLines, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(line) = log.next_line().await.unwrap() {
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("stderr ended without {needle:?}: {seen:?}");
}

/// `sessiond import -i -` on `storage`, running, with `env` set; its stdin stays open until it
/// exits.
fn running_import(storage: &Storage, env: &[(&str, &str)]) -> RunningCli {
    let args = with_store(storage, &["import", "-i", "-"]);
    RunningCli::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), env)
}

/// An export of `api`'s tenant, with a key, and `BATCH + 600` sessions: its lines (the tenant,
/// the key, then the sessions from line 3).
async fn export_of_more_than_a_batch(api: ApiId) -> Vec<String> {
    let source = Storage::new().await;
    let tenant = api.profile().new_tenant_id();
    seed(&source, api, &tenant, BATCH + 600, 5).await;
    let words = ["keys", "create", "--api", api.as_str(), "--tenant", &tenant];
    run_ok(&source, &words).await;
    let original = lines(&export(&source, &[api]).await);
    let kinds: Vec<Value> = original[..3]
        .iter()
        .map(|l| record(l)["kind"].clone())
        .collect();
    assert_eq!(kinds, ["tenant", "key", "session"]);
    original
}

/// Ctrl-C during an import into a store that holds sessions (no bulk load: each batch is a
/// transaction): the batches stored stay, the one being read is dropped, the exit code is 130,
/// and the message names the line to go on from. Importing the input from that line completes it:
/// the store then exports exactly what the whole file holds.
async fn an_interrupted_import_keeps_its_stored_batches_and_names_the_line_to_go_on_from() {
    let api = ApiId::Anam;
    let original = export_of_more_than_a_batch(api).await;
    let storage = Storage::new().await;
    // A session of another api: an import into a store that holds sessions, from stdin, is not
    // one bulk load.
    let other = ApiId::Opencx;
    seed(&storage, other, &other.profile().new_tenant_id(), 1, 1).await;
    let mut import = running_import(&storage, &[]);
    // The input stays open: the import stores its first batch (once it reads the session after
    // it) and waits for more lines.
    import.feed(file(&original).as_bytes()).await;
    until_stored(&storage, api, BATCH).await;
    let err = stopped_by(import, "-INT", 130, None).await;
    let resume = 3 + BATCH;
    assert!(
        err.contains(&format!(
            "interrupted at line {resume}: stored 1 tenant, 1 key, {BATCH} sessions"
        )) && err.contains(&format!("tail -n +{resume}")),
        "{err}"
    );
    assert_same_ndjson(
        &export(&storage, &[api]).await,
        &file(&original[..resume - 1]),
        "what the interrupted import stored",
    );
    let rest = file(&original[resume - 1..]);
    let out = run_with_input(&storage, &["import", "-i", "-"], &rest).await;
    assert_succeeded(&["import", "-i", "-"], &out);
    assert_summary(&out, "imported 0 tenants, 0 keys, 600 sessions");
    assert_same_ndjson(
        &export(&storage, &[api]).await,
        &file(&original),
        "the store after the rest was imported",
    );
}

/// SIGTERM during an import into an empty SQLite store, which is one bulk load: nothing of it is
/// stored, not even its tenant and key lines (stored as they were read), the exit code is 143,
/// and the store takes the same import afterwards.
#[tokio::test]
async fn an_interrupted_bulk_import_stores_nothing() {
    let api = ApiId::Alcamine;
    let original = export_of_more_than_a_batch(api).await;
    let storage = Storage::new().await;
    let mut import = running_import(
        &storage,
        &[("SESSIOND_LOG", "sessiond::store::sqlite=debug")],
    );
    let stderr = until_a_bulk_load_begins(&mut import).await;
    import.feed(file(&original).as_bytes()).await;
    let err = stopped_by(import, "-TERM", 143, Some(stderr)).await;
    assert!(
        err.contains("interrupted: nothing of this import is stored"),
        "{err}"
    );
    // Rolled back before it exited: no journal for the next open to roll back.
    let journal = storage.data_dir().join("sessiond.db-journal");
    assert!(
        !journal.exists(),
        "a journal is left: {}",
        journal.display()
    );
    assert_eq!(export(&storage, &[]).await, "", "an empty store");
    import_ok(&storage, &file(&original)).await;
    assert_same_ndjson(
        &export(&storage, &[api]).await,
        &file(&original),
        "the import after",
    );
}

/// `sessiond seed` of a new tenant of `api`, running, with `env` set: the process and the tenant.
fn running_seed(
    storage: &Storage,
    api: ApiId,
    count: u64,
    env: &[(&str, &str)],
) -> (RunningCli, String) {
    let tenant = api.profile().new_tenant_id();
    let words = seed_words(api, &tenant, count);
    let args = with_store(
        storage,
        &words.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (RunningCli::spawn(&args, env), tenant)
}

/// Ctrl-C during a seed into a store that holds sessions and that a server has open (so each
/// batch is a transaction, not one bulk load): the batches stored stay, whole, and the message
/// says how many.
async fn an_interrupted_seed_keeps_its_stored_batches() {
    let storage = Storage::new().await;
    let other = ApiId::Opencx;
    seed(&storage, other, &other.profile().new_tenant_id(), 1, 1).await;
    let server = ProcessServer::spawn(&storage).await;
    // Far more than it stores before the first batch is seen.
    let (api, count) = (ApiId::Anam, 10_000_000);
    let (seeding, _) = running_seed(&storage, api, count, &[]);
    until_stored(&storage, api, 1).await;
    let err = stopped_by(seeding, "-INT", 130, None).await;
    let stored = stored_session_ids(&storage, api).await.len();
    assert!(stored > 0 && stored % BATCH == 0, "whole batches: {stored}");
    assert!(
        err.contains(&format!("interrupted: {stored} sessions of {count} stored")),
        "{err}"
    );
    server.stop().await;
}

/// SIGTERM during a seed into an empty SQLite store, one bulk load: none of its sessions is
/// stored; the tenant it created before stays.
#[tokio::test]
async fn an_interrupted_bulk_seed_stores_no_session() {
    let storage = Storage::new().await;
    let api = ApiId::Funnelfox;
    let env = [("SESSIOND_LOG", "sessiond::store::sqlite=debug")];
    let (mut seeding, tenant) = running_seed(&storage, api, 10_000_000, &env);
    let stderr = until_a_bulk_load_begins(&mut seeding).await;
    let err = stopped_by(seeding, "-TERM", 143, Some(stderr)).await;
    assert!(
        err.contains("interrupted: none of the sessions is stored")
            && err.contains("the tenant it created stays"),
        "{err}"
    );
    let left = lines(&export(&storage, &[]).await);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(record(&left[0])["id"], json!(tenant));
}

/// Ctrl-C during an export to a pipe: the export stops at the end of the page it is writing, so
/// its output is whole lines (records of the store), exits with 130 and says the output is cut
/// short.
async fn an_interrupted_export_ends_with_a_whole_page() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let api = ApiId::Anam;
    let storage = Storage::new().await;
    seed(&storage, api, &api.profile().new_tenant_id(), 2 * BATCH, 5).await;
    let args = with_store(&storage, &["export"]);
    let mut export = RunningCli::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let mut stdout = tokio::io::BufReader::new(export.stdout());
    let mut log = export.stderr_lines();
    // Its first line out, the export is soon held by the pipe (64 KiB) behind its buffer (1 MiB),
    // in its first page: BATCH Anam sessions are several MiB of NDJSON.
    let mut out = String::new();
    stdout.read_line(&mut out).await.unwrap();
    assert_eq!(record(&out)["kind"], json!("tenant"), "{out}");
    export.signal("-INT");
    // Printed once the stop is asked for.
    let mut err = lines_until(&mut log, "sessiond: stopping").await;
    stdout.read_to_string(&mut out).await.unwrap();
    let status = export.output().await.status;
    while let Some(line) = log.next_line().await.unwrap() {
        err.push(line);
    }
    let err = err.join("\n");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted: the output is cut short"),
        "{err}"
    );
    let written = lines(&out);
    let sessions = written
        .iter()
        .filter(|l| record(l)["kind"] == json!("session"))
        .count();
    assert_eq!(sessions, BATCH, "the first page, whole");
}

/// An export is the store at one moment: sessions a server deletes, changes or creates while the
/// export is under way (held by its pipe in its first page) are exported as they were when it began.
async fn an_export_beside_a_server_writing_is_the_store_as_it_began() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let api = ApiId::Anam;
    let storage = Storage::new().await;
    let tenant = api.profile().new_tenant_id();
    seed(&storage, api, &tenant, 2 * BATCH, 6).await;
    let before = export(&storage, &[api]).await;
    let ids: Vec<String> = lines(&before)
        .iter()
        .filter(|l| is_session(l))
        .map(|l| record(l)["session"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2 * BATCH);
    let server = TestServer::start_in(storage).await;
    let args = with_store(server.storage(), &["export", "--api", api.as_str()]);
    let mut held = RunningCli::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let mut stdout = tokio::io::BufReader::new(held.stdout());
    // Its first line out, the export has its snapshot, and the pipe soon holds it in its first
    // page (BATCH Anam sessions are several MiB of NDJSON).
    let mut out = String::new();
    stdout.read_line(&mut out).await.unwrap();
    assert_eq!(record(&out)["kind"], json!("tenant"), "{out}");
    // Sessions of its second page: one deleted, one changed; and one new.
    let (last, changed) = (&ids[2 * BATCH - 1], &ids[2 * BATCH - 2]);
    server
        .admin_session(Method::DELETE, api, last)
        .await
        .expect(204);
    server
        .patch_session(api, changed, fixtures::labelled(api, "changed"))
        .await
        .expect(200);
    server
        .create_session(api, &tenant, &fixtures::minimal(api))
        .await
        .expect(201);
    stdout.read_to_string(&mut out).await.unwrap();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_succeeded(&words, &held.output().await);
    let (out, before) = (lines(&out), lines(&before));
    let now = lines(&export(server.storage(), &[api]).await);
    assert_ne!(now, before, "the server's writes are stored");
    assert_eq!(out.len(), before.len());
    for (i, (out, before)) in out.iter().zip(&before).enumerate() {
        assert_eq!(out, before, "line {} of the export", i + 1);
    }
}

// ---- a store this process cannot write -----------------------------------------------------------

/// Sets the mode of the data dir `dir` and of every file in it.
fn set_modes(dir: &std::path::Path, dir_mode: u32, file_mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file_mode)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
}

/// The names and contents of the files in `dir`.
fn files(dir: &std::path::Path) -> BTreeSet<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `export`, `tenants list` and `keys list` read a SQLite store that this process cannot write
/// (its file and directory read-only; run by root, the binary runs as `nobody`, whom the modes
/// bind): the same output as from the store when writable, and the data dir is left as it was
/// (no WAL files: the directory takes none, so the store is read as immutable).
#[tokio::test]
async fn a_store_that_cannot_be_written_is_exported_and_listed() {
    use std::os::unix::fs::MetadataExt;
    let storage = Storage::new().await;
    let api = ApiId::Anam;
    let tenant = api.profile().new_tenant_id();
    seed(&storage, api, &tenant, 20, 3).await;
    let words = ["keys", "create", "--api", api.as_str(), "--tenant", &tenant];
    run_ok(&storage, &words).await;
    let reads: [&[&str]; 3] = [
        &["export", "-o", "-"],
        &["tenants", "list", "--api", api.as_str()],
        &["keys", "list", "--api", api.as_str(), "--tenant", &tenant],
    ];
    let mut writable = Vec::new();
    for words in reads {
        writable.push(run_ok(&storage, words).await.stdout);
    }
    assert!(writable.iter().all(|out| !out.is_empty()));
    let dir = storage.data_dir();
    let before = files(dir);
    set_modes(dir, 0o555, 0o444);
    let root = std::fs::metadata(dir).unwrap().uid() == 0;
    for (words, expected) in reads.into_iter().zip(&writable) {
        let args = with_store(&storage, words);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = if root {
            cli_as(65534, &args).await
        } else {
            cli(&args).await
        };
        assert_succeeded(words, &out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(expected),
            "{words:?} of the read-only store"
        );
    }
    set_modes(dir, 0o755, 0o644);
    assert!(files(dir) == before, "the data dir changed");
}

/// An export to a file is written beside it and put in place once complete: one that fails on
/// the way (here at a stored document that cannot be decoded, the last of the store) leaves the
/// file as it was, and nothing beside it.
#[tokio::test]
async fn an_export_that_fails_leaves_its_file_as_it_was() {
    let storage = Storage::new().await;
    let api = ApiId::Anam;
    seed(&storage, api, &api.profile().new_tenant_id(), BATCH + 10, 2).await;
    let db = rusqlite::Connection::open(storage.data_dir().join("sessiond.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE sessions SET body = x'00ff0102' WHERE pk = (SELECT max(pk) FROM sessions)",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.ndjson");
    std::fs::write(&file, "the previous backup\n").unwrap();
    let out = run(&storage, &["export", "-o", file.to_str().unwrap()]).await;
    assert!(!out.status.success(), "the export succeeded");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "the previous backup\n"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["backup.ndjson"], "{}", stderr(&out));
}
