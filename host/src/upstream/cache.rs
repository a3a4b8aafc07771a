//! The answers of upstream resolvers, kept for their TTL as CoreDNS's `cache` plugin keeps
//! them: one entry per question (name, type, class, EDNS present, DO, CD), TTLs counted down
//! when served, positive answers kept at most `max_ttl` and negative ones (NXDOMAIN, NODATA)
//! by their SOA, at least [`MIN_TTL`]. Bounded in entries so a flood of distinct names cannot
//! grow memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;

/// CoreDNS `cache`'s default MINTTL: no answer is kept for less.
pub const MIN_TTL: u32 = 5;
/// CoreDNS `cache`'s default capacity (per kind there; here for both together).
pub const DEFAULT_CAPACITY: usize = 9984;
/// Larger answers are not kept (they are rare and would crowd out many small ones).
const MAX_ENTRY_BYTES: usize = 4096;

/// What a query asks, as far as the answer depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Lowercase, with the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: bool,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

impl Key {
    /// The key of a query message; `None` when it has not exactly one question.
    pub fn of(query: &Message) -> Option<Key> {
        let [q] = query.queries.as_slice() else { return None };
        Some(Key {
            name: q.name().to_lowercase().to_ascii(),
            qtype: q.query_type().into(),
            qclass: q.query_class().into(),
            edns: query.edns.is_some(),
            dnssec_ok: query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: query.metadata.checking_disabled,
        })
    }
}

/// CoreDNS cache's two kinds of entry (its `type` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Success,
    /// NXDOMAIN or NODATA.
    Denial,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::Denial => "denial",
        }
    }
}

struct Entry {
    message: Message,
    stored: Instant,
    keep: Duration,
    kind: Kind,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    /// Entries of each kind, kept with the map (for the entries gauge).
    success: usize,
    denial: usize,
}

impl Entries {
    fn count(&mut self, kind: Kind, up: bool) {
        let n = match kind {
            Kind::Success => &mut self.success,
            Kind::Denial => &mut self.denial,
        };
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    fn insert(&mut self, key: Key, entry: Entry) {
        self.count(entry.kind, true);
        if let Some(old) = self.map.insert(key, entry) {
            self.count(old.kind, false);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.map.remove(key) {
            self.count(old.kind, false);
        }
    }
}

pub struct Cache {
    entries: Mutex<Entries>,
    capacity: usize,
    /// Longest time a positive answer is kept (CoreDNS `cache TTL`); 0 turns the cache off.
    max_ttl: u32,
}

impl Cache {
    pub fn new(capacity: usize, max_ttl: u32) -> Cache {
        Cache { entries: Mutex::new(Entries::default()), capacity, max_ttl }
    }

    pub fn enabled(&self) -> bool {
        self.max_ttl > 0 && self.capacity > 0
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.map.len()).unwrap_or(0)
    }

    /// (success, denial) entries.
    pub fn counts(&self) -> (usize, usize) {
        self.entries.lock().map(|e| (e.success, e.denial)).unwrap_or((0, 0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept answer to `key`, with `id` and its TTLs counted down, if it has not expired.
    pub fn get(&self, key: &Key, id: u16, now: Instant) -> Option<(Vec<u8>, Kind)> {
        if !self.enabled() {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.map.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        if age >= entry.keep {
            entries.remove(key);
            return None;
        }
        let (mut m, kind) = (entry.message.clone(), entry.kind);
        drop(entries);
        let elapsed = age.as_secs().min(u64::from(u32::MAX)) as u32;
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()).chain(m.additionals.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(elapsed);
        }
        m.metadata.id = id;
        Some((m.to_vec().ok()?, kind))
    }

    /// Keeps `answer` (the bytes an upstream sent) for as long as its records allow.
    pub fn put(&self, key: Key, answer: &[u8], now: Instant) {
        if !self.enabled() || answer.len() > MAX_ENTRY_BYTES {
            return;
        }
        let Ok(message) = Message::from_vec(answer) else { return };
        let Some((keep, kind)) = self.lifetime(&message) else { return };
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.map.len() >= self.capacity && !entries.map.contains_key(&key) {
            let expired: Vec<Key> = entries.map.iter().filter(|(_, e)| now.saturating_duration_since(e.stored) >= e.keep).map(|(k, _)| k.clone()).collect();
            for k in &expired {
                entries.remove(k);
            }
            if entries.map.len() >= self.capacity {
                // Full of live answers: make room by dropping one (the map's order is random).
                if let Some(k) = entries.map.keys().next().cloned() {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(key, Entry { message, stored: now, keep, kind });
    }

    /// How long an answer may be kept, and its kind; `None` for what is not kept (truncated,
    /// errors).
    fn lifetime(&self, m: &Message) -> Option<(Duration, Kind)> {
        if m.metadata.truncation {
            return None;
        }
        let min_ttl = MIN_TTL.min(self.max_ttl);
        let kind = if m.response_code == ResponseCode::NoError && !m.answers.is_empty() { Kind::Success } else { Kind::Denial };
        let ttl = match m.response_code {
            ResponseCode::NoError if !m.answers.is_empty() => m.answers.iter().chain(&m.authorities).map(|r| r.ttl).min()?.min(self.max_ttl),
            // Negative answers (RFC 2308 §5): the SOA's TTL, at most its MINIMUM field.
            ResponseCode::NoError | ResponseCode::NXDomain => m
                .authorities
                .iter()
                .find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .unwrap_or(min_ttl)
                .min(self.max_ttl),
            _ => return None,
        };
        Some((Duration::from_secs(u64::from(ttl.max(min_ttl))), kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, Record, RecordType};

    fn answer(name: &str, ttl: u32) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii(name).unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(name, ttl, RData::A("192.0.2.1".parse().unwrap())));
        m.to_vec().unwrap()
    }

    fn key(name: &str) -> Key {
        Key { name: name.into(), qtype: 1, qclass: 1, edns: false, dnssec_ok: false, checking_disabled: false }
    }

    #[test]
    fn kept_for_the_ttl_and_counted_down() {
        let cache = Cache::new(10, 3600);
        let t0 = Instant::now();
        cache.put(key("a.example."), &answer("a.example.", 60), t0);
        let (bytes, kind) = cache.get(&key("a.example."), 99, t0 + Duration::from_secs(20)).unwrap();
        assert_eq!(kind, Kind::Success);
        let got = Message::from_vec(&bytes).unwrap();
        assert_eq!(got.metadata.id, 99);
        assert_eq!(got.answers[0].ttl, 40);
        assert!(cache.get(&key("a.example."), 1, t0 + Duration::from_secs(60)).is_none());
        assert!(cache.get(&key("b.example."), 1, t0).is_none());
    }

    #[test]
    fn max_ttl_caps_and_min_ttl_floors() {
        let cache = Cache::new(10, 30);
        let t0 = Instant::now();
        cache.put(key("long.example."), &answer("long.example.", 3000), t0);
        cache.put(key("zero.example."), &answer("zero.example.", 0), t0);
        assert!(cache.get(&key("long.example."), 1, t0 + Duration::from_secs(29)).is_some());
        assert!(cache.get(&key("long.example."), 1, t0 + Duration::from_secs(31)).is_none());
        assert!(cache.get(&key("zero.example."), 1, t0 + Duration::from_secs(4)).is_some());
        assert!(cache.get(&key("zero.example."), 1, t0 + Duration::from_secs(6)).is_none());
    }

    #[test]
    fn bounded_in_entries_and_off_at_zero() {
        let cache = Cache::new(3, 3600);
        let t0 = Instant::now();
        for i in 0..10 {
            let n = format!("n{i}.example.");
            cache.put(key(&n), &answer(&n, 60), t0);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.counts(), (3, 0));
        let off = Cache::new(3, 0);
        off.put(key("a.example."), &answer("a.example.", 60), t0);
        assert!(off.get(&key("a.example."), 1, t0).is_none());
    }
}
