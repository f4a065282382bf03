//! The resolver's RRset cache.
//!
//! Keyed by (owner name lowercased, type, class). Every entry carries the
//! instant it expires; lookups return records with their TTL decayed to the
//! time that is left. Negative answers are cached per RFC 2308: NXDOMAIN for
//! the name (all types), NODATA for one (name, type), for
//! `min(SOA TTL, SOA MINIMUM)` seconds; a negative answer without an SOA is not
//! cached (RFC 2308 §5). The cache holds at most `max_entries` entries and
//! evicts the least recently used one when full.
//!
//! Data is ranked by credibility (RFC 2181 §5.4.1): glue < authority-section
//! data < answer-section data. Unexpired data is never replaced by data of a
//! lower rank, so a referral's glue cannot overwrite an authoritative answer.
//!
//! Sans-IO: the owner hands in the current [`Instant`].

use crate::time::{Duration, Instant};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::{BTreeMap, HashMap};

/// Credibility of cached data (RFC 2181 §5.4.1), lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Address records from a referral's additional section.
    Glue,
    /// NS/SOA records from an authority section.
    Authority,
    /// Records from an answer section.
    Answer,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Type(RecordType),
    /// The name does not exist (negative for every type).
    NxDomain,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    name: Name,
    kind: Kind,
    class: DNSClass,
}

#[derive(Clone, Debug)]
enum Data {
    Records(Vec<Record>),
    /// NODATA or NXDOMAIN, with the SOA that justified it (TTL as received).
    Negative(Box<Record>),
}

#[derive(Clone, Debug)]
struct Entry {
    data: Data,
    rank: Rank,
    expires: Instant,
    /// The LRU clock value of the last use; the key in `lru`.
    used: u64,
}

/// What a lookup found. Records come with TTLs decayed to the time left.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// The RRset.
    Hit(Vec<Record>),
    /// The name has no records of this type; the SOA with its decayed TTL.
    NoData(Record),
    /// The name does not exist; the SOA with its decayed TTL.
    NxDomain(Record),
    Miss,
}

/// Counters, for tests and for `dig`'s statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expired: u64,
    pub inserts: u64,
}

/// Limits for a [`Cache`].
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    pub max_entries: usize,
    /// Upper bound on any TTL (positive or negative) we keep.
    pub max_ttl: u32,
    /// Upper bound on negative TTLs (RFC 2308 §5 suggests 1-3 hours).
    pub max_negative_ttl: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 100_000,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
        }
    }
}

/// The RRset cache. See the module documentation.
#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    map: HashMap<Key, Entry>,
    lru: BTreeMap<u64, Key>,
    clock: u64,
    stats: CacheStats,
    /// Bumped on every change to the stored entries (see [`Cache::generation`]).
    generation: u64,
    /// The earliest instant at which a TTL returned since the last
    /// [`Cache::take_ttl_tick`] drops by a second (see there).
    ttl_tick: Option<Instant>,
}

/// The negative-caching TTL an SOA gives (RFC 2308 §5): the lesser of the
/// SOA record's own TTL and its MINIMUM field.
pub fn negative_ttl(soa: &Record) -> Option<u32> {
    match soa.data() {
        RData::SOA(s) => Some(soa.ttl().min(s.minimum())),
        _ => None,
    }
}

impl Cache {
    pub fn new(config: CacheConfig) -> Cache {
        Cache {
            config,
            map: HashMap::new(),
            lru: BTreeMap::new(),
            clock: 0,
            stats: CacheStats::default(),
            generation: 0,
            ttl_tick: None,
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Changes whenever an entry is stored, removed or the cache is
    /// cleared: an answer built from the cache stays valid (up to its TTLs)
    /// while this is unchanged. The DNS server's wire-answer memo relies on it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The earliest instant at which any TTL that [`Cache::peek`] or
    /// [`Cache::lookup`] returned since the last call would read one second
    /// less (TTLs are whole seconds rounded up, so a TTL read at `now` holds
    /// until the entry has one second less than it said left); `None` when
    /// nothing was returned. An answer built from those reads can be reused
    /// verbatim until then without over-stating any TTL.
    pub fn take_ttl_tick(&mut self) -> Option<Instant> {
        self.ttl_tick.take()
    }

    fn note_ttl(&mut self, expires: Instant, left: u32) {
        let tick = expires - Duration::from_secs(u64::from(left.saturating_sub(1)));
        self.ttl_tick = Some(self.ttl_tick.map_or(tick, |t| t.min(tick)));
    }

    pub fn clear(&mut self) {
        self.generation += 1;
        self.map.clear();
        self.lru.clear();
    }

    fn touch(&mut self, key: &Key) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.map.get_mut(key) {
            self.lru.remove(&e.used);
            e.used = clock;
            self.lru.insert(clock, key.clone());
        }
    }

    fn remove(&mut self, key: &Key) {
        self.generation += 1;
        if let Some(e) = self.map.remove(key) {
            self.lru.remove(&e.used);
        }
    }

    /// Get a live entry (removing it, and counting, if it expired).
    fn get_live(&mut self, key: &Key, now: Instant) -> Option<&Entry> {
        let expired = match self.map.get(key) {
            None => return None,
            Some(e) => e.expires <= now,
        };
        if expired {
            self.remove(key);
            self.stats.expired += 1;
            return None;
        }
        self.touch(key);
        self.map.get(key)
    }

    fn store(&mut self, key: Key, data: Data, rank: Rank, ttl: u32, now: Instant) {
        self.generation += 1;
        if ttl == 0 {
            return;
        }
        if let Some(old) = self.map.get(&key) {
            if old.expires > now && old.rank > rank {
                return;
            }
            self.remove(&key);
        }
        if self.config.max_entries == 0 {
            return;
        }
        while self.map.len() >= self.config.max_entries {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.map.remove(&victim);
            self.stats.evictions += 1;
        }
        self.clock += 1;
        let entry = Entry {
            data,
            rank,
            expires: now + Duration::from_secs(ttl as u64),
            used: self.clock,
        };
        self.lru.insert(self.clock, key.clone());
        self.map.insert(key, entry);
        self.stats.inserts += 1;
    }

    /// Cache one RRset (all `records` must share owner, type and class; the
    /// caller groups them, see [`group_rrsets`]). The TTL is the RRset's
    /// smallest, capped by `max_ttl`.
    pub fn insert_rrset(&mut self, records: Vec<Record>, rank: Rank, now: Instant) {
        let Some(first) = records.first() else {
            return;
        };
        let key = Key {
            name: first.name().to_lowercase(),
            kind: Kind::Type(first.record_type()),
            class: first.dns_class(),
        };
        let ttl = records
            .iter()
            .map(|r| r.ttl())
            .min()
            .unwrap_or(0)
            .min(self.config.max_ttl);
        let records = records
            .into_iter()
            .map(|mut r| {
                r.set_name(key.name.clone());
                r
            })
            .collect();
        self.store(key, Data::Records(records), rank, ttl, now);
    }

    /// Cache every RRset in `records`, grouped by (owner, type, class).
    pub fn insert_records(&mut self, records: &[Record], rank: Rank, now: Instant) {
        for set in group_rrsets(records) {
            let name = set[0].name().to_lowercase();
            let class = set[0].dns_class();
            self.insert_rrset(set, rank, now);
            // Positive data for a name contradicts a cached NXDOMAIN for it.
            self.remove(&Key {
                name,
                kind: Kind::NxDomain,
                class,
            });
        }
    }

    fn insert_negative(&mut self, key: Key, soa: Record, now: Instant) {
        let Some(ttl) = negative_ttl(&soa) else {
            return;
        };
        let ttl = ttl.min(self.config.max_negative_ttl);
        self.store(key, Data::Negative(Box::new(soa)), Rank::Answer, ttl, now);
    }

    /// Cache that `name` does not exist (RFC 2308 §5), justified by `soa`.
    /// Without an SOA nothing is cached.
    pub fn insert_nxdomain(&mut self, name: &Name, class: DNSClass, soa: Record, now: Instant) {
        let key = Key {
            name: name.to_lowercase(),
            kind: Kind::NxDomain,
            class,
        };
        self.insert_negative(key, soa, now);
    }

    /// Cache that `name` has no `rtype` records (NODATA, RFC 2308 §5).
    pub fn insert_nodata(
        &mut self,
        name: &Name,
        rtype: RecordType,
        class: DNSClass,
        soa: Record,
        now: Instant,
    ) {
        let key = Key {
            name: name.to_lowercase(),
            kind: Kind::Type(rtype),
            class,
        };
        self.insert_negative(key, soa, now);
    }

    /// Look up (name, type, class): a cached NXDOMAIN for the name answers
    /// every type. Counts a hit or a miss.
    pub fn lookup(
        &mut self,
        name: &Name,
        rtype: RecordType,
        class: DNSClass,
        now: Instant,
    ) -> Lookup {
        let r = self.peek(name, rtype, class, now);
        if r == Lookup::Miss {
            self.stats.misses += 1;
        } else {
            self.stats.hits += 1;
        }
        r
    }

    /// Like [`Cache::lookup`] but does not count (for the resolver's internal
    /// probes, such as looking for a CNAME or the closest NS set).
    pub fn peek(
        &mut self,
        name: &Name,
        rtype: RecordType,
        class: DNSClass,
        now: Instant,
    ) -> Lookup {
        let name = name.to_lowercase();
        let nx = Key {
            name: name.clone(),
            kind: Kind::NxDomain,
            class,
        };
        if let Some(e) = self.get_live(&nx, now) {
            if let Data::Negative(soa) = &e.data {
                let left = ttl_left(e.expires, now);
                let (r, expires) = (with_ttl(soa, left), e.expires);
                self.note_ttl(expires, left);
                return Lookup::NxDomain(r);
            }
        }
        let key = Key {
            name,
            kind: Kind::Type(rtype),
            class,
        };
        let (found, expires, left) = match self.get_live(&key, now) {
            None => return Lookup::Miss,
            Some(e) => {
                let left = ttl_left(e.expires, now);
                let found = match &e.data {
                    Data::Records(rs) => {
                        Lookup::Hit(rs.iter().map(|r| with_ttl(r, left)).collect())
                    }
                    Data::Negative(soa) => Lookup::NoData(with_ttl(soa, left)),
                };
                (found, e.expires, left)
            }
        };
        self.note_ttl(expires, left);
        found
    }

    /// The rank of a live positive entry, if any (for tests and the resolver).
    pub fn rank_of(
        &self,
        name: &Name,
        rtype: RecordType,
        class: DNSClass,
        now: Instant,
    ) -> Option<Rank> {
        let key = Key {
            name: name.to_lowercase(),
            kind: Kind::Type(rtype),
            class,
        };
        self.map
            .get(&key)
            .filter(|e| e.expires > now)
            .map(|e| e.rank)
    }
}

fn ttl_left(expires: Instant, now: Instant) -> u32 {
    // Round up so an entry with 0.4 s left still says 1 s, as BIND does not
    // show 0 for a live entry.
    let micros = (expires - now).as_micros();
    micros.div_ceil(1_000_000).min(u32::MAX as u128) as u32
}

fn with_ttl(r: &Record, ttl: u32) -> Record {
    let mut r = r.clone();
    r.set_ttl(ttl);
    r
}

/// Split records into RRsets by (owner lowercased, type, class), keeping the
/// first-seen order of sets.
pub fn group_rrsets(records: &[Record]) -> Vec<Vec<Record>> {
    let mut sets: Vec<Vec<Record>> = Vec::new();
    for r in records {
        let found = sets.iter_mut().find(|s| {
            let f = &s[0];
            f.record_type() == r.record_type()
                && f.dns_class() == r.dns_class()
                && f.name().eq_ignore_root(r.name())
        });
        match found {
            Some(s) => {
                if !s.iter().any(|x| x.data() == r.data()) {
                    s.push(r.clone());
                }
            }
            None => sets.push(vec![r.clone()]),
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use std::net::Ipv4Addr;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(n(name), ttl, RData::A(A(Ipv4Addr::from(ip))))
    }
    fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            n(zone),
            ttl,
            RData::SOA(SOA::new(
                n("ns.x."),
                n("h.x."),
                1,
                3600,
                600,
                86400,
                minimum,
            )),
        )
    }
    fn t(s: u64) -> Instant {
        Instant::from_secs(s)
    }
    fn cache() -> Cache {
        Cache::new(CacheConfig::default())
    }
    fn hit_ttls(l: Lookup) -> Vec<u32> {
        match l {
            Lookup::Hit(rs) => rs.iter().map(|r| r.ttl()).collect(),
            other => panic!("expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn a_ttl_read_holds_until_its_tick_and_not_a_microsecond_longer() {
        // Two RRsets stored at different sub-second offsets, read at
        // assorted instants: every TTL read before the tick equals the
        // first read, and at the tick one of them is a second lower.
        for (off_a, off_b, read) in [
            (0, 0, 0),
            (250_000, 700_000, 900_000),
            (999_999, 1, 500_000),
            (400_000, 400_000, 1_399_999),
        ] {
            let mut c = cache();
            let base = 100_000_000u64;
            c.insert_records(
                &[a("a.example.", 300, [1, 2, 3, 4])],
                Rank::Answer,
                Instant::from_micros(base + off_a),
            );
            c.insert_records(
                &[a("b.example.", 60, [1, 2, 3, 5])],
                Rank::Answer,
                Instant::from_micros(base + off_b),
            );
            let at = Instant::from_micros(base + read);
            let ttls = |c: &mut Cache, now| {
                let x = hit_ttls(c.peek(&n("a.example."), RecordType::A, DNSClass::IN, now));
                let y = hit_ttls(c.peek(&n("b.example."), RecordType::A, DNSClass::IN, now));
                (x[0], y[0])
            };
            assert!(c.take_ttl_tick().is_none(), "no reads yet");
            let first = ttls(&mut c, at);
            let tick = c.take_ttl_tick().expect("reads were made");
            assert!(tick > at && tick <= at + Duration::from_secs(1));
            let mut probe = at;
            while probe < tick {
                assert_eq!(
                    ttls(&mut c, probe),
                    first,
                    "offsets {off_a} {off_b} read {read}"
                );
                probe += Duration::from_micros(50_000);
            }
            assert_eq!(ttls(&mut c, tick - Duration::from_micros(1)), first);
            let after = ttls(&mut c, tick);
            assert!(
                after.0 < first.0 || after.1 < first.1,
                "{first:?} -> {after:?}"
            );
        }
    }

    #[test]
    fn ttl_decays_with_elapsed_time() {
        let mut c = cache();
        c.insert_records(
            &[a("www.example.", 300, [1, 2, 3, 4])],
            Rank::Answer,
            t(100),
        );
        let got = c.lookup(&n("www.example."), RecordType::A, DNSClass::IN, t(160));
        assert_eq!(hit_ttls(got), vec![240]);
    }

    #[test]
    fn rrset_ttl_is_the_minimum_of_its_records() {
        let mut c = cache();
        c.insert_records(
            &[
                a("m.example.", 300, [1, 1, 1, 1]),
                a("m.example.", 50, [2, 2, 2, 2]),
            ],
            Rank::Answer,
            t(0),
        );
        assert_eq!(
            hit_ttls(c.lookup(&n("m.example."), RecordType::A, DNSClass::IN, t(0))),
            vec![50, 50]
        );
        assert_eq!(
            c.lookup(&n("m.example."), RecordType::A, DNSClass::IN, t(50)),
            Lookup::Miss
        );
    }

    #[test]
    fn entry_expires_at_its_ttl_and_counts_expired() {
        let mut c = cache();
        c.insert_records(&[a("e.example.", 10, [1, 2, 3, 4])], Rank::Answer, t(0));
        assert!(matches!(
            c.lookup(&n("e.example."), RecordType::A, DNSClass::IN, t(9)),
            Lookup::Hit(_)
        ));
        assert_eq!(
            c.lookup(&n("e.example."), RecordType::A, DNSClass::IN, t(10)),
            Lookup::Miss
        );
        assert_eq!(c.stats().expired, 1);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn key_is_case_insensitive() {
        let mut c = cache();
        c.insert_records(&[a("WwW.ExAmple.", 60, [1, 2, 3, 4])], Rank::Answer, t(0));
        let got = c.lookup(&n("www.EXAMPLE."), RecordType::A, DNSClass::IN, t(1));
        match got {
            Lookup::Hit(rs) => assert_eq!(rs[0].name().to_ascii(), "www.example."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn key_includes_type_and_class() {
        let mut c = cache();
        c.insert_records(&[a("k.example.", 60, [1, 2, 3, 4])], Rank::Answer, t(0));
        assert_eq!(
            c.lookup(&n("k.example."), RecordType::AAAA, DNSClass::IN, t(1)),
            Lookup::Miss
        );
        assert_eq!(
            c.lookup(&n("k.example."), RecordType::A, DNSClass::CH, t(1)),
            Lookup::Miss
        );
    }

    #[test]
    fn nxdomain_is_cached_for_every_type_of_the_name() {
        let mut c = cache();
        c.insert_nxdomain(
            &n("nope.example."),
            DNSClass::IN,
            soa("example.", 3600, 300),
            t(0),
        );
        for ty in [RecordType::A, RecordType::MX, RecordType::TXT] {
            match c.lookup(&n("NOPE.example."), ty, DNSClass::IN, t(100)) {
                Lookup::NxDomain(s) => assert_eq!(s.ttl(), 200),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn nodata_is_cached_per_type() {
        let mut c = cache();
        c.insert_nodata(
            &n("www.example."),
            RecordType::AAAA,
            DNSClass::IN,
            soa("example.", 3600, 300),
            t(0),
        );
        assert!(matches!(
            c.lookup(&n("www.example."), RecordType::AAAA, DNSClass::IN, t(1)),
            Lookup::NoData(_)
        ));
        assert_eq!(
            c.lookup(&n("www.example."), RecordType::A, DNSClass::IN, t(1)),
            Lookup::Miss
        );
    }

    #[test]
    fn negative_ttl_is_min_of_soa_ttl_and_minimum() {
        let mut c = cache();
        // SOA TTL smaller than MINIMUM: the TTL wins.
        c.insert_nodata(
            &n("a.example."),
            RecordType::A,
            DNSClass::IN,
            soa("example.", 30, 300),
            t(0),
        );
        // MINIMUM smaller than TTL: MINIMUM wins.
        c.insert_nodata(
            &n("b.example."),
            RecordType::A,
            DNSClass::IN,
            soa("example.", 3600, 20),
            t(0),
        );
        assert!(matches!(
            c.lookup(&n("a.example."), RecordType::A, DNSClass::IN, t(29)),
            Lookup::NoData(_)
        ));
        assert_eq!(
            c.lookup(&n("a.example."), RecordType::A, DNSClass::IN, t(30)),
            Lookup::Miss
        );
        assert!(matches!(
            c.lookup(&n("b.example."), RecordType::A, DNSClass::IN, t(19)),
            Lookup::NoData(_)
        ));
        assert_eq!(
            c.lookup(&n("b.example."), RecordType::A, DNSClass::IN, t(20)),
            Lookup::Miss
        );
    }

    #[test]
    fn negative_answer_without_soa_is_not_cached() {
        let mut c = cache();
        // Anything other than an SOA cannot justify a negative entry.
        c.insert_nxdomain(
            &n("x.example."),
            DNSClass::IN,
            a("example.", 300, [1, 1, 1, 1]),
            t(0),
        );
        assert_eq!(
            c.lookup(&n("x.example."), RecordType::A, DNSClass::IN, t(0)),
            Lookup::Miss
        );
        assert!(c.is_empty());
    }

    #[test]
    fn negative_ttl_is_capped() {
        let mut c = Cache::new(CacheConfig {
            max_negative_ttl: 60,
            ..CacheConfig::default()
        });
        c.insert_nxdomain(
            &n("x.example."),
            DNSClass::IN,
            soa("example.", 86400, 86400),
            t(0),
        );
        assert_eq!(
            c.lookup(&n("x.example."), RecordType::A, DNSClass::IN, t(60)),
            Lookup::Miss
        );
    }

    #[test]
    fn positive_ttl_is_capped_by_max_ttl() {
        let mut c = Cache::new(CacheConfig {
            max_ttl: 100,
            ..CacheConfig::default()
        });
        c.insert_records(
            &[a("c.example.", 1_000_000, [1, 2, 3, 4])],
            Rank::Answer,
            t(0),
        );
        assert_eq!(
            hit_ttls(c.lookup(&n("c.example."), RecordType::A, DNSClass::IN, t(0))),
            vec![100]
        );
    }

    #[test]
    fn zero_ttl_is_not_cached() {
        let mut c = cache();
        c.insert_records(&[a("z.example.", 0, [1, 2, 3, 4])], Rank::Answer, t(0));
        assert!(c.is_empty());
    }

    #[test]
    fn lru_evicts_the_least_recently_used_entry() {
        let mut c = Cache::new(CacheConfig {
            max_entries: 2,
            ..CacheConfig::default()
        });
        c.insert_records(&[a("one.", 60, [1, 1, 1, 1])], Rank::Answer, t(0));
        c.insert_records(&[a("two.", 60, [2, 2, 2, 2])], Rank::Answer, t(0));
        // Use "one." so that "two." is the least recently used.
        assert!(matches!(
            c.lookup(&n("one."), RecordType::A, DNSClass::IN, t(1)),
            Lookup::Hit(_)
        ));
        c.insert_records(&[a("three.", 60, [3, 3, 3, 3])], Rank::Answer, t(1));
        assert_eq!(c.len(), 2);
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(
            c.lookup(&n("two."), RecordType::A, DNSClass::IN, t(1)),
            Lookup::Miss
        );
        assert!(matches!(
            c.lookup(&n("one."), RecordType::A, DNSClass::IN, t(1)),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            c.lookup(&n("three."), RecordType::A, DNSClass::IN, t(1)),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn counters_count_hits_and_misses() {
        let mut c = cache();
        c.insert_records(&[a("h.", 60, [1, 1, 1, 1])], Rank::Answer, t(0));
        c.lookup(&n("h."), RecordType::A, DNSClass::IN, t(0));
        c.lookup(&n("h."), RecordType::A, DNSClass::IN, t(0));
        c.lookup(&n("m."), RecordType::A, DNSClass::IN, t(0));
        // peek does not count.
        c.peek(&n("m."), RecordType::A, DNSClass::IN, t(0));
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (2, 1));
    }

    #[test]
    fn lower_rank_data_does_not_replace_higher_rank() {
        let mut c = cache();
        c.insert_records(&[a("ns1.example.", 300, [1, 1, 1, 1])], Rank::Answer, t(0));
        c.insert_records(&[a("ns1.example.", 300, [6, 6, 6, 6])], Rank::Glue, t(1));
        match c.lookup(&n("ns1.example."), RecordType::A, DNSClass::IN, t(2)) {
            Lookup::Hit(rs) => assert_eq!(rs[0].data(), &RData::A(A(Ipv4Addr::new(1, 1, 1, 1)))),
            other => panic!("{other:?}"),
        }
        // Equal or higher rank replaces.
        c.insert_records(&[a("ns1.example.", 300, [7, 7, 7, 7])], Rank::Answer, t(3));
        match c.lookup(&n("ns1.example."), RecordType::A, DNSClass::IN, t(3)) {
            Lookup::Hit(rs) => assert_eq!(rs[0].data(), &RData::A(A(Ipv4Addr::new(7, 7, 7, 7)))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn positive_data_clears_a_cached_nxdomain() {
        let mut c = cache();
        c.insert_nxdomain(
            &n("new.example."),
            DNSClass::IN,
            soa("example.", 3600, 300),
            t(0),
        );
        c.insert_records(&[a("new.example.", 60, [1, 2, 3, 4])], Rank::Answer, t(1));
        assert!(matches!(
            c.lookup(&n("new.example."), RecordType::A, DNSClass::IN, t(2)),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn group_rrsets_splits_by_owner_and_type_and_drops_duplicates() {
        let recs = [
            a("x.", 60, [1, 1, 1, 1]),
            a("y.", 60, [2, 2, 2, 2]),
            a("X.", 60, [3, 3, 3, 3]),
            a("x.", 60, [1, 1, 1, 1]),
        ];
        let sets = group_rrsets(&recs);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].len(), 2);
        assert_eq!(sets[1].len(), 1);
    }

    #[test]
    fn generation_changes_on_store_and_clear() {
        let mut c = Cache::new(CacheConfig::default());
        let g0 = c.generation();
        c.insert_records(&[a("g.example.", 60, [1, 2, 3, 4])], Rank::Answer, t(0));
        let g1 = c.generation();
        assert_ne!(g0, g1);
        c.clear();
        assert_ne!(g1, c.generation());
    }
}
