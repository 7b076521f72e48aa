//! Vendor profiles: what a contract cannot say. One module per vendor holds its id formats, tenant
//! field, documented defaults, derived fields, invariants, lifecycle rules, secret redaction and the
//! exact error bodies its public route sends. Nothing here knows about HTTP or SQL.

/// A JSON object made at its final size, its members in the order written: what the generators
/// use instead of `json!`, which grows each map from empty (a rehash at every doubling). A value is
/// `null`, a nested `{ … }`, or an expression `Value::from` takes, moved in (`json!` copies a
/// `Value` it is given through serde).
macro_rules! object {
    (@ [$($out:tt)*]) => {
        serde_json::Value::Object(serde_json::Map::from_iter([$($out)*]))
    };
    (@ [$($out:tt)*] $key:literal : null $(, $($rest:tt)*)?) => {
        object!(@ [$($out)* ($key.to_owned(), serde_json::Value::Null),] $($($rest)*)?)
    };
    (@ [$($out:tt)*] $key:literal : { $($inner:tt)* } $(, $($rest:tt)*)?) => {
        object!(@ [$($out)* ($key.to_owned(), object!($($inner)*)),] $($($rest)*)?)
    };
    (@ [$($out:tt)*] $key:literal : $value:expr $(, $($rest:tt)*)?) => {
        object!(@ [$($out)* ($key.to_owned(), serde_json::Value::from($value)),] $($($rest)*)?)
    };
    ($($body:tt)*) => {
        object!(@ [] $($body)*)
    };
}

mod alcamine;
mod anam;
pub mod fake;
mod funnelfox;
mod opencx;
mod salesnip;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value};

use fake::Fake;

const DEMO_SEED: u64 = 20_260_105;

/// One of the vendor APIs sessiond serves. Adding a vendor adds a variant here, one module, one spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiId {
    Salesnip,
    Opencx,
    Funnelfox,
    Alcamine,
    Anam,
}

impl ApiId {
    pub const ALL: [ApiId; 5] = [
        ApiId::Salesnip,
        ApiId::Opencx,
        ApiId::Funnelfox,
        ApiId::Alcamine,
        ApiId::Anam,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiId::Salesnip => "salesnip",
            ApiId::Opencx => "opencx",
            ApiId::Funnelfox => "funnelfox",
            ApiId::Alcamine => "alcamine",
            ApiId::Anam => "anam",
        }
    }

    /// The vendor profile of this api.
    pub fn profile(self) -> &'static dyn Profile {
        match self {
            ApiId::Salesnip => &salesnip::SaleSnip,
            ApiId::Opencx => &opencx::OpenCx,
            ApiId::Funnelfox => &funnelfox::FunnelFox,
            ApiId::Alcamine => &alcamine::Alcamine,
            ApiId::Anam => &anam::Anam,
        }
    }
}

impl fmt::Display for ApiId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown api `{0}` (expected one of salesnip, opencx, funnelfox, alcamine, anam)")]
pub struct UnknownApi(pub String);

impl FromStr for ApiId {
    type Err = UnknownApi;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiId::ALL
            .into_iter()
            .find(|api| api.as_str() == s)
            .ok_or_else(|| UnknownApi(s.to_owned()))
    }
}

/// The errors a public (vendor) route can answer with. Each vendor renders each kind its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicError {
    MissingCredential,
    InvalidCredential,
    MalformedId,
    NotFound,
    MethodNotAllowed,
    RouteNotFound,
    Internal,
}

impl PublicError {
    pub const ALL: [PublicError; 7] = [
        PublicError::MissingCredential,
        PublicError::InvalidCredential,
        PublicError::MalformedId,
        PublicError::NotFound,
        PublicError::MethodNotAllowed,
        PublicError::RouteNotFound,
        PublicError::Internal,
    ];
}

/// A vendor's rendering of one [`PublicError`]: HTTP status code and JSON body.
#[derive(Debug, Clone)]
pub struct ErrorReply {
    pub status: u16,
    pub body: Value,
}

impl ErrorReply {
    fn new(status: u16, body: Value) -> Self {
        ErrorReply { status, body }
    }
}

/// A problem with a session document, located by JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

impl Violation {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Everything a profile needs to know about one write.
pub struct WriteCtx<'a> {
    pub tenant: &'a str,
    pub id: &'a str,
    pub now: DateTime<Utc>,
    /// The stored document before this write (`None` on create).
    pub prev: Option<&'a Map<String, Value>>,
    /// What the client sent: the merge patch on patch, the whole document on replace; on create
    /// only its top-level scalar fields (no rule looks into sent objects or arrays).
    pub input: Sent<'a>,
    /// Base of derived URLs (SaleSnip `url`).
    pub salesnip_url_base: &'a str,
    /// Restoring an export: keep server-assigned values (sequence numbers) the document carries.
    pub restoring: bool,
}

impl WriteCtx<'_> {
    /// The client explicitly sent `key` (in a patch: it touched it).
    fn sent(&self, key: &str) -> Option<&Value> {
        self.input.get(key)
    }
}

/// The largest number a tenant's sequence (OpenCX's `ticket_number`) reaches: the largest
/// integer a JSON client reading it as a double still gets exactly. A restored number or tenant
/// sequence above it is refused, where it would overflow the next number handed out.
pub const MAX_SEQ: i64 = (1 << 53) - 1;

/// What a client sent with a write (see [`WriteCtx::input`]).
#[derive(Debug, Clone, Copy)]
pub enum Sent<'a> {
    /// A whole object: a patch, a replacement, a partial document to fill.
    Object(&'a Map<String, Value>),
    /// The top-level scalar fields of a created document, in a list: a rule looks up a few of a
    /// dozen or so, and a map would hash every one of them for every create (serde_json's maps
    /// hash with SipHash: 3.5 % of an import's CPU went to the hashing of this snapshot).
    Scalars(&'a [(String, Value)]),
}

impl<'a> Sent<'a> {
    pub fn get(self, key: &str) -> Option<&'a Value> {
        match self {
            Sent::Object(map) => map.get(key),
            Sent::Scalars(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        }
    }
}

/// What a vendor needs beyond its contract.
pub trait Profile: Send + Sync {
    fn api(&self) -> ApiId;

    /// A fresh tenant id in the vendor's format.
    fn new_tenant_id(&self) -> String;
    /// Whether a client-chosen tenant id has the vendor's format.
    fn check_tenant_id(&self, id: &str) -> Result<(), String>;

    /// A fresh session id in the vendor's format.
    fn new_session_id(&self) -> String;
    /// Whether a client-chosen session id has the vendor's format.
    fn check_session_id(&self, id: &str) -> Result<(), String>;
    /// The one spelling under which a session id is stored, for ids a vendor reads in more than
    /// one: a UUID names the same session in upper and lower case (RFC 9562; Swift's
    /// `UUID().uuidString` is upper case), and sessions are stored under the lower-case one, as
    /// a PostgreSQL `uuid` column gives it back. Other formats are case-sensitive.
    fn canonical_session_id<'a>(&self, id: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(id)
    }
    /// The one spelling under which a tenant is created, like [`Profile::canonical_session_id`]:
    /// a UUID tenant id in upper case names the tenant of its lower-case spelling.
    fn canonical_tenant_id<'a>(&self, id: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(id)
    }
    /// Whether an id in a public URL that is not in the vendor's format is a 400 (else: 404).
    fn malformed_id_is_bad_request(&self) -> bool {
        false
    }

    /// The document field that names the tenant, if the vendor has one.
    fn tenant_field(&self) -> Option<&'static str> {
        None
    }
    /// Whether sessions carry a per-tenant sequence number.
    fn uses_sequence(&self) -> bool {
        false
    }
    /// The sequence number a stored document carries.
    fn sequence_of(&self, _doc: &Value) -> Option<i64> {
        None
    }
    /// Puts the number handed out by the tenant's sequence into a new, checked document. On
    /// create, `prepare` fills a placeholder the contract accepts; the real number is assigned
    /// only once every check passed, so a rejected write uses up no number.
    fn assign_sequence(&self, _doc: &mut Value, _n: i64) {}

    /// Fills server-controlled fields (timestamps, defaults, derived fields) and checks invariants
    /// and lifecycle rules. `doc` already has `id` and the tenant field set.
    fn prepare(
        &self,
        doc: &mut Map<String, Value>,
        ctx: &WriteCtx<'_>,
        problems: &mut Vec<Violation>,
    );

    /// The document as the public GET returns it, when that differs from the stored one (secrets
    /// redacted where the vendor does); `None`: the stored document is the public one.
    fn public_view(&self, _doc: &Value) -> Option<Value> {
        None
    }

    /// The vendor's rendering of an error on its public route.
    fn error(&self, kind: PublicError) -> ErrorReply;

    /// A realistic, complete and valid session document of `tenant`, drawn from `fake`.
    fn generate(&self, fake: &mut Fake<'_>, tenant: &str) -> Value;

    /// Makes a generated document agree with the fields a client gave it (`?fill=true`), before
    /// they are laid over it: the generated fields that the vendor's rules tie to a given one
    /// (a lifecycle's timestamps, the ids an embedded object repeats) follow the given one, so
    /// that a fill never fails, or fails by chance, on a rule the client's fields alone keep.
    fn fit(&self, _generated: &mut Map<String, Value>, _given: &Map<String, Value>) {}

    /// The demo tenant's id.
    fn demo_tenant(&self) -> &'static str;

    /// The demo tenant's sessions: generated from a fixed seed, so ids (and the printed curl
    /// lines) are the same on every machine.
    fn demo_sessions(&self) -> Vec<Value> {
        let mut rng =
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(DEMO_SEED + self.api() as u64);
        let mut fake = Fake { rng: &mut rng };
        (0..3)
            .map(|_| self.generate(&mut fake, self.demo_tenant()))
            .collect()
    }
}

// ---- helpers shared by the profiles -------------------------------------------------------------

/// `len` random characters from `[A-Za-z0-9]`.
pub fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// `2026-01-05T10:00:00.000Z`: the timestamp format every vendor here uses.
pub fn iso_millis(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // The same text as `format("%Y-%m-%dT%H:%M:%S%.3fZ")`, its digits put in place: chrono's
    // RFC 3339 writer cost ~600 instructions a timestamp (callgrind), and a generated Alcamine
    // session has 17 of them.
    let year = t.year();
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        // A year of other than four digits, or a leap second: chrono's own text.
        return t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    }
    fn put(text: &mut [u8], mut n: u32) {
        for digit in text.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    let mut text = *b"0000-00-00T00:00:00.000Z";
    put(&mut text[0..4], year.unsigned_abs());
    put(&mut text[5..7], t.month());
    put(&mut text[8..10], t.day());
    put(&mut text[11..13], t.hour());
    put(&mut text[14..16], t.minute());
    put(&mut text[17..19], t.second());
    put(&mut text[20..23], t.timestamp_subsec_millis());
    String::from_utf8(text.to_vec()).expect("ASCII digits and separators")
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn is_uuid(s: &str) -> bool {
    // Hyphenated form only: that is what every vendor here sends.
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// `s` in lower case if it is a hyphenated UUID with upper-case digits; else `s` as it is.
fn canonical_uuid(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) && is_uuid(s) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn check_uuid(s: &str) -> Result<(), String> {
    if is_uuid(s) {
        Ok(())
    } else {
        Err(format!("`{s}` is not a hyphenated UUID"))
    }
}

fn check_cuid2(s: &str) -> Result<(), String> {
    if s.len() == 24 && cuid2::is_cuid2(s) {
        Ok(())
    } else {
        Err(format!("`{s}` is not a 24-character cuid2"))
    }
}

/// Sets `key` to `value()` unless the document already has it. Nearly every document has it, so
/// neither the key nor the value is made before that is known (`entry` took an owned key: an
/// allocation per default; and OpenCX's contact id default drew a UUID from the OS each time).
fn default(doc: &mut Map<String, Value>, key: &str, value: impl FnOnce() -> Value) {
    if !doc.contains_key(key) {
        doc.insert(key.to_owned(), value());
    }
}

/// Sets a server-derived field. A client that sent a different value gets a violation.
fn derive(
    doc: &mut Map<String, Value>,
    ctx: &WriteCtx<'_>,
    key: &str,
    value: Value,
    problems: &mut Vec<Violation>,
) {
    // A null sent is left out (a merge patch's "remove"): the server derives the field again.
    if let Some(sent) = ctx.sent(key)
        && !sent.is_null()
        && *sent != value
    {
        problems.push(Violation::new(
            format!("/{key}"),
            format!("`{key}` is derived by the server and must be {value} (or left out)"),
        ));
    }
    doc.insert(key.to_owned(), value);
}

/// Keeps `createdAt`-like fields from the previous version; on create, fills `now` when absent.
/// A `null` sent for one (a merge patch's "remove", or a replacement's "not set") keeps the
/// previous time too: the time a session was created does not change.
fn created_timestamp(doc: &mut Map<String, Value>, ctx: &WriteCtx<'_>, key: &str, now: Value) {
    match ctx.prev.and_then(|p| p.get(key)) {
        Some(prev) if ctx.sent(key).is_none_or(Value::is_null) => {
            doc.insert(key.to_owned(), prev.clone());
        }
        // On create, a null is "not set" too: the time is now (an import restores what it
        // reads: there a null stays, for the contract to refuse).
        None if !doc.contains_key(key) || (doc[key].is_null() && !ctx.restoring) => {
            doc.insert(key.to_owned(), now);
        }
        _ => {}
    }
}

/// Sets `updatedAt`-like fields to `now` unless the client sent one explicitly (imports keep
/// theirs). A `null` sent is kept where the contract allows one (`nullable`: a fixture of a
/// session never updated; a merge patch's null would remove it) and by an import (for the
/// contract to refuse); elsewhere it is "not set", and the time is now.
fn updated_timestamp(
    doc: &mut Map<String, Value>,
    ctx: &WriteCtx<'_>,
    key: &str,
    nullable: bool,
    now: Value,
) {
    match ctx.sent(key) {
        None => {
            doc.insert(key.to_owned(), now);
        }
        Some(Value::Null) if nullable || ctx.restoring => {
            doc.insert(key.to_owned(), Value::Null);
        }
        Some(Value::Null) => {
            doc.insert(key.to_owned(), now);
        }
        Some(_) => {}
    }
}

/// `key` must be null in the document's current state: a value the client sent is a violation; a
/// value it did not send (left from before, or generated by `?fill=true`) is cleared.
fn must_be_null(
    doc: &mut Map<String, Value>,
    ctx: &WriteCtx<'_>,
    key: &str,
    why: &str,
    problems: &mut Vec<Violation>,
) {
    if doc.get(key).is_none_or(Value::is_null) {
        return;
    }
    if ctx.sent(key).is_some_and(|v| !v.is_null()) {
        problems.push(Violation::new(
            format!("/{key}"),
            format!("must be null {why}"),
        ));
    } else {
        doc.insert(key.to_owned(), Value::Null);
    }
}

/// Rejects a transition of `key` that the vendor's lifecycle does not allow.
fn lifecycle(
    doc: &Map<String, Value>,
    ctx: &WriteCtx<'_>,
    key: &str,
    order: &[&str],
    problems: &mut Vec<Violation>,
) {
    let (Some(prev), Some(next)) = (
        ctx.prev.and_then(|p| p.get(key)).and_then(Value::as_str),
        doc.get(key).and_then(Value::as_str),
    ) else {
        return;
    };
    let rank = |s: &str| order.iter().position(|o| *o == s);
    if let (Some(a), Some(b)) = (rank(prev), rank(next))
        && b < a
    {
        problems.push(Violation::new(
            format!("/{key}"),
            format!("`{key}` cannot go back from {prev} to {next}"),
        ));
    }
}

/// `{"error": error, "message": message}`: the shape Alcamine and Anam use.
fn error_message(status: u16, error: &str, message: &str) -> ErrorReply {
    ErrorReply::new(
        status,
        serde_json::json!({ "error": error, "message": message }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_builds_what_json_builds() {
        let inner = serde_json::json!({ "moved": true });
        let built = object! {
            "a": 1, "b": null, "c": { "d": [1, 2], "e": {} }, "f": "text", "g": inner.clone(),
            "h": Some(2.5), "i": None::<i64>, "a": "again",
        };
        let expected = serde_json::json!({
            "a": 1, "b": null, "c": { "d": [1, 2], "e": {} }, "f": "text", "g": inner,
            "h": 2.5, "i": null, "a": "again",
        });
        assert_eq!(built, expected);
        // The same members in the same order (a repeated key keeps its first place).
        assert_eq!(built.to_string(), expected.to_string());
        assert_eq!(
            built.to_string(),
            r#"{"a":"again","b":null,"c":{"d":[1,2],"e":{}},"f":"text","g":{"moved":true},"h":2.5,"i":null}"#
        );
    }

    #[test]
    fn api_ids_round_trip() {
        for api in ApiId::ALL {
            assert_eq!(api.as_str().parse::<ApiId>().unwrap(), api);
            assert_eq!(api.profile().api(), api);
        }
        assert!("stripe".parse::<ApiId>().is_err());
    }

    #[test]
    fn iso_millis_is_the_strftime_format() {
        // Edges (the epoch, the ends of years 0 and 9999, years beyond) and a spread of instants
        // in between (an LCG over the millisecond range of years -100..=10100).
        let (first, last) = (-65_322_000_000_000_i64, 256_555_000_000_000_i64);
        let mut samples = vec![
            0,
            1,
            999,
            -1,
            1_763_776_000_123,
            4_102_444_799_999,
            -62_167_219_200_000,
            -62_167_219_200_001,
            253_402_300_799_999,
            253_402_300_800_000,
            first,
            last,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            samples.push(first + ((x >> 11) % (last - first) as u64) as i64);
        }
        for ms in samples {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            // What it was written with before, for every year; the strftime text for 0..=9999.
            let text = iso_millis(t);
            assert_eq!(
                text,
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "{ms} ms"
            );
            if (0..=9999).contains(&chrono::Datelike::year(&t)) {
                assert_eq!(
                    text,
                    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                    "{ms} ms"
                );
            }
        }
        // Sub-millisecond digits are cut, as by `%.3f`.
        let t = DateTime::from_timestamp(1_763_776_000, 123_999_999).unwrap();
        assert_eq!(
            iso_millis(t),
            t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        );
    }

    #[test]
    fn fresh_ids_pass_their_own_checks() {
        for api in ApiId::ALL {
            let p = api.profile();
            for _ in 0..50 {
                p.check_session_id(&p.new_session_id()).unwrap();
                p.check_tenant_id(&p.new_tenant_id()).unwrap();
            }
            p.check_tenant_id(p.demo_tenant()).unwrap();
        }
    }

    #[test]
    fn only_uuids_have_another_spelling() {
        let lower = "0f8e2c1a-7b3d-4e5f-9a6b-c7d8e9f0a1b2";
        let upper = lower.to_ascii_uppercase();
        for api in ApiId::ALL {
            let p = api.profile();
            let fresh = p.new_session_id();
            assert!(matches!(p.canonical_session_id(&fresh), Cow::Borrowed(_)));
            let expected = match api {
                ApiId::Opencx | ApiId::Anam => lower,
                _ => upper.as_str(),
            };
            assert_eq!(p.canonical_session_id(&upper), expected, "{api}");
        }
        // Not a UUID, so not a UUID's other spelling: left as it is.
        for other in [
            "NOT-A-UUID",
            "0F8E2C1A7B3D4E5F9A6BC7D8E9F0A1B2",
            "{0F8E2C1A-7B3D-4E5F-9A6B-C7D8E9F0A1B2}",
        ] {
            assert_eq!(canonical_uuid(other), other);
        }
    }
}
