//! Deterministic fake data for `sessiond seed` and the admin API's `?fill=true`: ids in each
//! vendor's format and plausible names, places and times, all drawn from one seeded RNG.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::iso_millis;

pub const FIRST_NAMES: &[&str] = &[
    "Ada", "Ben", "Chloe", "Diego", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
    "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen",
    "Yara",
];
pub const LAST_NAMES: &[&str] = &[
    "Smith",
    "Garcia",
    "Müller",
    "Rossi",
    "Okafor",
    "Tanaka",
    "Dubois",
    "Kowalski",
    "Silva",
    "Nguyen",
    "Haddad",
    "Johansson",
    "Patel",
    "O'Brien",
    "Novak",
    "Kim",
    "Santos",
    "Ivanova",
];
/// (city, ISO country, region, timezone, locale, postal code)
pub const PLACES: &[(&str, &str, &str, &str, &str, &str)] = &[
    ("London", "GB", "ENG", "Europe/London", "en-GB", "EC1A"),
    ("New York", "US", "NY", "America/New_York", "en-US", "10001"),
    ("Berlin", "DE", "BE", "Europe/Berlin", "de-DE", "10115"),
    ("Madrid", "ES", "MD", "Europe/Madrid", "es-ES", "28001"),
    ("Paris", "FR", "IDF", "Europe/Paris", "fr-FR", "75001"),
    ("Toronto", "CA", "ON", "America/Toronto", "en-CA", "M5H"),
    ("Sydney", "AU", "NSW", "Australia/Sydney", "en-AU", "2000"),
    (
        "São Paulo",
        "BR",
        "SP",
        "America/Sao_Paulo",
        "pt-BR",
        "01000",
    ),
    ("Tokyo", "JP", "13", "Asia/Tokyo", "ja-JP", "100-0001"),
    ("Austin", "US", "TX", "America/Chicago", "en-US", "73301"),
];
pub const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
];

/// ASCII bytes as a `String`: collecting `char`s encodes each as UTF-8 and grows the string one
/// push at a time (~14 000 instructions of an Alcamine session's generation, callgrind).
fn ascii(bytes: impl Iterator<Item = u8>) -> String {
    String::from_utf8(bytes.collect()).expect("ASCII")
}

/// A seeded source of fake values.
pub struct Fake<'a> {
    pub rng: &'a mut StdRng,
}

impl Fake<'_> {
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(self.rng).expect("non-empty list")
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.random_range(lo..=hi)
    }

    pub fn name(&mut self) -> String {
        format!("{} {}", self.pick(FIRST_NAMES), self.pick(LAST_NAMES))
    }

    /// An address at example.com/.org/.net (reserved for documentation).
    pub fn email(&mut self) -> String {
        let first = self.pick(FIRST_NAMES).to_lowercase();
        let last: String = self
            .pick(LAST_NAMES)
            .to_lowercase()
            .chars()
            .filter(char::is_ascii_alphabetic)
            .collect();
        let domain = self.pick(&["example.com", "example.org", "example.net"]);
        format!("{first}.{last}{}@{domain}", self.int(1, 999))
    }

    /// A phone number in E.164.
    pub fn phone(&mut self) -> String {
        format!("+1{}{:07}", self.int(201, 989), self.int(0, 9_999_999))
    }

    pub fn alphanumeric(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        ascii((0..len).map(|_| CHARS[self.rng.random_range(0..CHARS.len())]))
    }

    pub fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    /// A 24-character cuid2 (lowercase letter, then base-36).
    pub fn cuid2(&mut self) -> String {
        const TAIL: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let first = b'a' + self.rng.random_range(0..26u8);
        ascii(
            std::iter::once(first)
                .chain((0..23).map(|_| TAIL[self.rng.random_range(0..TAIL.len())])),
        )
    }

    /// A ULID whose time part is `at`.
    pub fn ulid(&mut self, at: DateTime<Utc>) -> String {
        ulid::Ulid::from_parts(at.timestamp_millis() as u64, self.rng.random()).to_string()
    }

    /// A time in 2025 or 2026 (before mid-2026), to the millisecond.
    pub fn time(&mut self) -> DateTime<Utc> {
        let base = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date");
        base + Duration::milliseconds(self.int(0, 540 * 24 * 3600 * 1000))
    }

    pub fn iso(&mut self, t: DateTime<Utc>) -> String {
        iso_millis(t)
    }
}
