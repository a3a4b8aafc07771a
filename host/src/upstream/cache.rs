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

struct Entry {
    message: Message,
    stored: Instant,
    keep: Duration,
}

pub struct Cache {
    entries: Mutex<HashMap<Key, Entry>>,
    capacity: usize,
    /// Longest time a positive answer is kept (CoreDNS `cache TTL`); 0 turns the cache off.
    max_ttl: u32,
}

impl Cache {
    pub fn new(capacity: usize, max_ttl: u32) -> Cache {
        Cache { entries: Mutex::new(HashMap::new()), capacity, max_ttl }
    }

    pub fn enabled(&self) -> bool {
        self.max_ttl > 0 && self.capacity > 0
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept answer to `key`, with `id` and its TTLs counted down, if it has not expired.
    pub fn get(&self, key: &Key, id: u16, now: Instant) -> Option<Vec<u8>> {
        if !self.enabled() {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        if age >= entry.keep {
            entries.remove(key);
            return None;
        }
        let mut m = entry.message.clone();
        drop(entries);
        let elapsed = age.as_secs().min(u64::from(u32::MAX)) as u32;
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()).chain(m.additionals.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(elapsed);
        }
        m.metadata.id = id;
        m.to_vec().ok()
    }

    /// Keeps `answer` (the bytes an upstream sent) for as long as its records allow.
    pub fn put(&self, key: Key, answer: &[u8], now: Instant) {
        if !self.enabled() || answer.len() > MAX_ENTRY_BYTES {
            return;
        }
        let Ok(message) = Message::from_vec(answer) else { return };
        let Some(keep) = self.lifetime(&message) else { return };
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| now.saturating_duration_since(e.stored) < e.keep);
            if entries.len() >= self.capacity {
                // Full of live answers: make room by dropping one (the map's order is random).
                if let Some(k) = entries.keys().next().cloned() {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(key, Entry { message, stored: now, keep });
    }

    /// How long an answer may be kept; `None` for what is not kept (truncated, errors).
    fn lifetime(&self, m: &Message) -> Option<Duration> {
        if m.metadata.truncation {
            return None;
        }
        let min_ttl = MIN_TTL.min(self.max_ttl);
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
        Some(Duration::from_secs(u64::from(ttl.max(min_ttl))))
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
        let got = Message::from_vec(&cache.get(&key("a.example."), 99, t0 + Duration::from_secs(20)).unwrap()).unwrap();
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
        let off = Cache::new(3, 0);
        off.put(key("a.example."), &answer("a.example.", 60), t0);
        assert!(off.get(&key("a.example."), 1, t0).is_none());
    }
}
