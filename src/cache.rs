//! Read caches in front of the store: session bodies (bounded by bytes) and key records.
//!
//! Both stay exact under concurrent writes with one rule: a reader that missed notes the epoch of
//! the entry's shard before it reads the store, and fills the cache only if no write touched that
//! shard meanwhile; a writer bumps the epoch and drops the entry after its store write commits.
//! Both steps happen under the shard's lock, so a stale value read before a write can never be
//! cached after it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

use crate::vendor::ApiId;

const SHARDS: usize = 64;

/// Fixed per-entry overhead counted on top of the body and id (map slot, Arcs, lengths).
const ENTRY_OVERHEAD: u64 = 96;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    api: ApiId,
    id: Box<str>,
}

/// Borrowed form of [`SessionKey`], so lookups do not allocate.
#[derive(Hash)]
struct SessionKeyRef<'a> {
    api: ApiId,
    id: &'a str,
}

impl Equivalent<SessionKey> for SessionKeyRef<'_> {
    fn equivalent(&self, key: &SessionKey) -> bool {
        self.api == key.api && self.id == &*key.id
    }
}

/// What the read path needs of a session.
#[derive(Debug, Clone)]
pub struct CachedSession {
    pub tenant: Arc<str>,
    pub body: Bytes,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<SessionKey, CachedSession> for ByBytes {
    fn weight(&self, key: &SessionKey, val: &CachedSession) -> u64 {
        val.body.len() as u64 + key.id.len() as u64 + val.tenant.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Proof of the epoch a reader saw before reading the store.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    shard: usize,
    epoch: u64,
}

/// Sessions by (api, id), bounded by total bytes.
pub struct SessionCache {
    cache: Option<Cache<SessionKey, CachedSession, ByBytes>>,
    epochs: Box<[Mutex<u64>]>,
    hasher: RandomState,
}

impl SessionCache {
    /// A cache of at most `capacity_bytes` (0 disables caching: every read goes to the store).
    pub fn new(capacity_bytes: u64) -> Self {
        let cache = (capacity_bytes > 0).then(|| {
            // Estimated item count only sizes the table; 1.5 KB is a typical session here.
            let items = (capacity_bytes / 1536).clamp(64, 1 << 24) as usize;
            Cache::with_weighter(items, capacity_bytes, ByBytes)
        });
        SessionCache {
            cache,
            epochs: (0..SHARDS).map(|_| Mutex::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, api: ApiId, id: &str) -> usize {
        (self.hasher.hash_one((api, id)) as usize) % SHARDS
    }

    pub fn get(&self, api: ApiId, id: &str) -> Option<CachedSession> {
        self.cache.as_ref()?.get(&SessionKeyRef { api, id })
    }

    /// Call before reading the store on a miss.
    pub fn ticket(&self, api: ApiId, id: &str) -> Ticket {
        let shard = self.shard(api, id);
        let epoch = *self.epochs[shard].lock().unwrap_or_else(|p| p.into_inner());
        Ticket { shard, epoch }
    }

    /// Caches what the store returned, unless a write happened since `ticket`.
    pub fn fill(&self, ticket: Ticket, api: ApiId, id: &str, value: CachedSession) {
        let Some(cache) = &self.cache else { return };
        let epoch = self.epochs[ticket.shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *epoch == ticket.epoch {
            cache.insert(SessionKey { api, id: id.into() }, value);
        }
    }

    /// Call after a write of (api, id) committed.
    pub fn invalidate(&self, api: ApiId, id: &str) {
        let shard = self.shard(api, id);
        let mut epoch = self.epochs[shard].lock().unwrap_or_else(|p| p.into_inner());
        *epoch += 1;
        if let Some(cache) = &self.cache {
            cache.remove(&SessionKeyRef { api, id });
        }
    }

    /// Drops everything (e.g. after missed invalidations).
    pub fn clear(&self) {
        let mut guards: Vec<_> = self
            .epochs
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        for g in &mut guards {
            **g += 1;
        }
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// Bytes held (by the weigher's count) and entries.
    pub fn usage(&self) -> (u64, usize) {
        self.cache
            .as_ref()
            .map_or((0, 0), |c| (c.weight(), c.len()))
    }
}

/// Hashes a SHA-256 digest by its first 8 bytes: they are already uniformly distributed, so
/// SipHash would only cost time. Only keys found in the store are ever inserted, so a client
/// cannot fill the map with colliding entries.
#[derive(Default, Clone, Copy)]
struct DigestHasher;

impl BuildHasher for DigestHasher {
    type Hasher = DigestHash;
    fn build_hasher(&self) -> DigestHash {
        DigestHash(0)
    }
}

struct DigestHash(u64);

impl std::hash::Hasher for DigestHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its 32 bytes in one call; keep the first 8.
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }
}

/// A live key as the read path needs it.
#[derive(Debug, Clone)]
pub struct CachedKey {
    pub api: ApiId,
    pub tenant: Arc<str>,
    pub hash: [u8; 32],
}

impl CachedKey {
    /// Whether this key (found by `hash`) may read `api`: compared in constant time.
    pub fn admits(&self, api: ApiId, hash: &[u8; 32]) -> Result<(), crate::vendor::PublicError> {
        if self.api == api && crate::auth::ct_eq(&self.hash, hash) {
            Ok(())
        } else {
            Err(crate::vendor::PublicError::InvalidCredential)
        }
    }
}

/// Milliseconds on a monotonic clock, read as cheaply as the OS allows: every cached GET checks a
/// key's age. The key TTL is seconds long, so Linux's coarse clock (it advances once per kernel
/// tick, 1–4 ms, and is read from memory without the TSC) is precise enough.
fn coarse_millis() -> u64 {
    #[cfg(target_os = "linux")]
    {
        use nix::time::{ClockId, clock_gettime};
        // It cannot fail for this clock on Linux; if it did, every key would count as expired
        // and be checked against the store again, which is safe.
        clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(u64::MAX, |t| {
            (t.tv_sec() as u64).saturating_mul(1000) + t.tv_nsec() as u64 / 1_000_000
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
    }
}

/// Keys by hash. Entries are re-checked against the store after `ttl`, so a revocation made by
/// another process (the offline CLI, another node) takes effect within `ttl` even if no
/// invalidation reaches this one.
pub struct KeyCache {
    /// Each key with the [`coarse_millis`] until which it is fresh.
    map: RwLock<HashMap<[u8; 32], (CachedKey, u64), DigestHasher>>,
    /// Bumped by every invalidation, after its entries left the map: a reader's ticket, and what a
    /// [`KeyMemo`] was made under.
    epoch: AtomicU64,
    /// Held by fills and invalidations, so that a fill cannot slip between an invalidation's
    /// removal and its bump of `epoch`.
    writing: Mutex<()>,
    ttl: Duration,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        KeyCache {
            map: RwLock::new(HashMap::default()),
            epoch: AtomicU64::new(0),
            writing: Mutex::new(()),
            ttl,
        }
    }

    /// The cached key, if present and fresh.
    pub fn get(&self, hash: &[u8; 32]) -> Option<CachedKey> {
        self.fresh(hash, coarse_millis()).map(|(key, _)| key)
    }

    /// The entry of `hash` and the [`coarse_millis`] until which it is fresh, if it is fresh at
    /// `now`.
    fn fresh(&self, hash: &[u8; 32], now: u64) -> Option<(CachedKey, u64)> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let (key, fresh_until) = map.get(hash)?;
        (now < *fresh_until).then(|| (key.clone(), *fresh_until))
    }

    /// The cached key presented as `key`, if present and fresh, remembered in `memo`: while the
    /// same key is presented again and no invalidation happened, the next lookup is one
    /// constant-time comparison instead of a SHA-256 and a map lookup (the read path keeps one
    /// memo per connection; clients send every request of a connection with one key).
    pub fn lookup<'m>(&self, key: &str, memo: &'m mut KeyMemo) -> Option<&'m CachedKey> {
        // Read before the map: an invalidation bumps the epoch only after its removal, so an
        // entry found below was not invalidated before this epoch was current.
        let epoch = self.epoch.load(Ordering::Acquire);
        let now = coarse_millis();
        if memo.holds(key, epoch, now) {
            return memo.entry.as_ref().map(|e| &e.key);
        }
        let hash = crate::auth::hash_key(key);
        let (cached, fresh_until) = self.fresh(&hash, now)?;
        // The map compared the digests with `==`; compare them again in constant time.
        if !crate::auth::ct_eq(&cached.hash, &hash) {
            return None;
        }
        memo.key.clear();
        memo.key.extend_from_slice(key.as_bytes());
        let entry = memo.entry.insert(MemoEntry {
            key: cached,
            fresh_until,
            epoch,
        });
        Some(&entry.key)
    }

    pub fn ticket(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn fill(&self, ticket: u64, key: CachedKey) {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let fresh_until = coarse_millis().saturating_add(ttl);
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) == ticket {
            self.map
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.hash, (key, fresh_until));
        }
    }

    /// Forgets a key (after its revocation committed), or every key with `None`.
    pub fn invalidate(&self, hash: Option<&[u8; 32]>) {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            match hash {
                Some(h) => {
                    map.remove(h);
                }
                None => map.clear(),
            }
        }
        self.epoch.fetch_add(1, Ordering::Release);
    }
}

/// The last key one connection presented and what [`KeyCache::lookup`] found for it. It is
/// worth nothing after any invalidation (a revocation of any key) or once the entry's TTL is
/// over; the key itself never leaves the connection's memory.
#[derive(Default)]
pub struct KeyMemo {
    key: Vec<u8>,
    entry: Option<MemoEntry>,
}

struct MemoEntry {
    key: CachedKey,
    fresh_until: u64,
    epoch: u64,
}

impl KeyMemo {
    fn holds(&self, key: &str, epoch: u64, now: u64) -> bool {
        self.entry
            .as_ref()
            .is_some_and(|e| e.epoch == epoch && now < e.fresh_until)
            // Constant time but for the length, which tells only how long this connection's
            // previous key was.
            && crate::auth::ct_eq(&self.key, key.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static str) -> CachedSession {
        CachedSession {
            tenant: "t".into(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_cached() {
        let c = SessionCache::new(1 << 20);
        let t = c.ticket(ApiId::Anam, "a");
        c.invalidate(ApiId::Anam, "a"); // a write committed after the reader's store read
        c.fill(t, ApiId::Anam, "a", entry("old"));
        assert!(c.get(ApiId::Anam, "a").is_none());
        let t = c.ticket(ApiId::Anam, "a");
        c.fill(t, ApiId::Anam, "a", entry("new"));
        assert_eq!(c.get(ApiId::Anam, "a").unwrap().body, "new");
        assert!(
            c.get(ApiId::Opencx, "a").is_none(),
            "apis do not share entries"
        );
    }

    #[test]
    fn bounded_by_bytes() {
        let c = SessionCache::new(64 * 1024);
        let body = Bytes::from(vec![b'x'; 1000]);
        for i in 0..1000 {
            let id = format!("id{i}");
            let t = c.ticket(ApiId::Anam, &id);
            c.fill(
                t,
                ApiId::Anam,
                &id,
                CachedSession {
                    tenant: "t".into(),
                    body: body.clone(),
                },
            );
        }
        let (bytes, items) = c.usage();
        assert!(
            bytes <= 64 * 1024 && items < 1000,
            "{bytes} bytes, {items} items"
        );
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let c = SessionCache::new(0);
        let t = c.ticket(ApiId::Anam, "a");
        c.fill(t, ApiId::Anam, "a", entry("x"));
        assert!(c.get(ApiId::Anam, "a").is_none());
    }

    fn fill_key(cache: &KeyCache, key: &str, tenant: &str) {
        cache.fill(
            cache.ticket(),
            CachedKey {
                api: ApiId::Anam,
                tenant: tenant.into(),
                hash: crate::auth::hash_key(key),
            },
        );
    }

    fn tenant_of(cache: &KeyCache, key: &str, memo: &mut KeyMemo) -> Option<String> {
        cache.lookup(key, memo).map(|k| k.tenant.to_string())
    }

    #[test]
    fn a_memo_answers_only_for_its_own_key_and_only_until_an_invalidation() {
        let k = KeyCache::new(Duration::from_secs(3600));
        fill_key(&k, "sk_anam_a", "ta");
        fill_key(&k, "sk_anam_b", "tb");
        let mut memo = KeyMemo::default();
        assert_eq!(tenant_of(&k, "sk_anam_a", &mut memo).as_deref(), Some("ta"));
        assert!(memo.holds("sk_anam_a", k.ticket(), coarse_millis()));
        // Keys one letter off, shorter, longer or empty are not the memo's.
        for other in ["sk_anam_c", "sk_anam_", "sk_anam_aa", ""] {
            assert!(!memo.holds(other, k.ticket(), coarse_millis()), "{other:?}");
            assert_eq!(tenant_of(&k, other, &mut memo), None, "{other:?}");
        }
        assert_eq!(tenant_of(&k, "sk_anam_a", &mut memo).as_deref(), Some("ta"));
        assert_eq!(tenant_of(&k, "sk_anam_b", &mut memo).as_deref(), Some("tb"));
        assert!(memo.holds("sk_anam_b", k.ticket(), coarse_millis()));
        // Revoking a: the memo of b is void too (any invalidation voids every memo) ...
        k.invalidate(Some(&crate::auth::hash_key("sk_anam_a")));
        assert!(!memo.holds("sk_anam_b", k.ticket(), coarse_millis()));
        // ... and b is found again in the map, a is not.
        assert_eq!(tenant_of(&k, "sk_anam_b", &mut memo).as_deref(), Some("tb"));
        assert_eq!(tenant_of(&k, "sk_anam_a", &mut memo), None);
        k.invalidate(None);
        assert_eq!(tenant_of(&k, "sk_anam_b", &mut memo), None);
    }

    #[test]
    fn a_memo_ends_with_its_entrys_ttl() {
        let k = KeyCache::new(Duration::from_millis(30));
        fill_key(&k, "sk_anam_a", "ta");
        let mut memo = KeyMemo::default();
        assert_eq!(tenant_of(&k, "sk_anam_a", &mut memo).as_deref(), Some("ta"));
        // Well past the TTL and the coarse clock's tick (1-4 ms).
        std::thread::sleep(Duration::from_millis(200));
        assert!(!memo.holds("sk_anam_a", k.ticket(), coarse_millis()));
        assert_eq!(tenant_of(&k, "sk_anam_a", &mut memo), None);
    }

    #[test]
    fn keys_expire_and_invalidate() {
        let k = KeyCache::new(Duration::from_secs(3600));
        let key = CachedKey {
            api: ApiId::Anam,
            tenant: "t".into(),
            hash: [1; 32],
        };
        let t = k.ticket();
        k.fill(t, key.clone());
        assert!(k.get(&[1; 32]).is_some());
        k.invalidate(Some(&[1; 32]));
        assert!(k.get(&[1; 32]).is_none());
        let stale = k.ticket();
        k.invalidate(None);
        k.fill(stale, key);
        assert!(k.get(&[1; 32]).is_none());
        let expired = KeyCache::new(Duration::ZERO);
        let t = expired.ticket();
        expired.fill(
            t,
            CachedKey {
                api: ApiId::Anam,
                tenant: "t".into(),
                hash: [2; 32],
            },
        );
        assert!(expired.get(&[2; 32]).is_none());
    }
}
