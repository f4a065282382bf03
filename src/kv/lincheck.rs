//! A linearizability checker for the key-value model (put, get, delete, compare-and-swap).
//!
//! A history is a list of [`Operation`]s, each with the time the client called it and the time
//! the answer came back. The history is linearizable if every operation can be given a single
//! instant between its call and its return such that, replayed in that order against one
//! sequential map, every operation returns what the client actually saw.
//!
//! How it checks (Wing & Gong's search, with Lowe's memoisation, as in Porcupine):
//! - **per key** (P-compositionality: a history of independent objects is linearizable iff each
//!   object's sub-history is): the history is split by key and each key checked on its own, so
//!   the search space is per key, not global;
//! - the key's calls and returns are laid out as one list sorted by time (a call at the same time
//!   as another op's return counts as overlapping: the lenient choice, never a false alarm);
//! - depth-first search: take a pending call that could be linearized now (it is before the
//!   first remaining return), apply it to the model; if the model accepts the output, remove the
//!   op and continue; on reaching a return whose op is not yet linearized, backtrack;
//! - memoisation: a (set of linearized ops, model state) pair already explored is not explored
//!   again; the set is a bitset and the state a small integer (values are interned), so the
//!   cache is cheap;
//! - **unknown outcomes** (a client timed out): the op may have taken effect at any point after
//!   its call, or never. Its return is placed after everything else, it is accepted with any
//!   result, and the search succeeds once every op with a known outcome is linearized (ops still
//!   pending then are the ones that never took effect). Reads with unknown outcome constrain
//!   nothing and are dropped;
//! - a time or step budget: when exhausted the answer is [`CheckResult::Timeout`], never a guess.
//!
//! When a key fails, [`CheckResult::NotLinearizable`] names the key and a window of ops: the op
//! at which the deepest attempted order got stuck (it had to return, but no order of what came
//! before let it return what it did), the ops overlapping it, and the few ops that completed
//! just before it — usually enough to see the anomaly by eye.
//!
//! Note: the budget is wall-clock time, so [`check`] reads the OS clock; it is an analysis tool,
//! not protocol code. [`check_steps`] is the deterministic variant.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the client asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvInput {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Get {
        key: String,
    },
    Delete {
        key: String,
    },
    /// Set `new` if the current value is `expected` (`None`: the key is absent).
    Cas {
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl KvInput {
    pub fn key(&self) -> &str {
        match self {
            KvInput::Put { key, .. }
            | KvInput::Get { key }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOutput {
    /// A put or delete succeeded.
    Ok,
    /// A get's result (`None`: absent).
    Value(Option<Vec<u8>>),
    /// Whether a compare-and-swap applied.
    CasResult(bool),
    /// Timed out or failed ambiguously: may or may not have taken effect.
    Unknown,
}

/// One client operation. `call`/`ret` are in any monotonic unit shared by all clients (e.g.
/// microseconds); ops with [`KvOutput::Unknown`] have `ret = u64::MAX` (any `ret` is treated as
/// infinity for them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    pub client: u64,
    pub call: u64,
    pub ret: u64,
    pub input: KvInput,
    pub output: KvOutput,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckResult {
    Linearizable,
    /// No valid order exists for `key`; `ops` are indices into the history (see the module docs
    /// for which), the stuck op first.
    NotLinearizable {
        key: String,
        ops: Vec<usize>,
    },
    /// The budget ran out before an answer.
    Timeout,
}

/// Checks `history` within a wall-clock `budget` (shared by all keys).
pub fn check(history: &[Operation], budget: Duration) -> CheckResult {
    let start = std::time::Instant::now();
    let mut b = Budget::Deadline {
        start,
        budget,
        countdown: 0,
    };
    check_with(history, &mut b)
}

/// Checks `history` with at most `max_steps` search steps in total (deterministic).
pub fn check_steps(history: &[Operation], max_steps: u64) -> CheckResult {
    let mut b = Budget::Steps(max_steps);
    check_with(history, &mut b)
}

enum Budget {
    Deadline {
        start: std::time::Instant,
        budget: Duration,
        countdown: u32,
    },
    Steps(u64),
}

impl Budget {
    /// One search step; false when the budget is exhausted.
    fn step(&mut self) -> bool {
        match self {
            Budget::Steps(n) => {
                if *n == 0 {
                    return false;
                }
                *n -= 1;
                true
            }
            Budget::Deadline {
                start,
                budget,
                countdown,
            } => {
                if *countdown == 0 {
                    *countdown = 1024;
                    if start.elapsed() > *budget {
                        return false;
                    }
                }
                *countdown -= 1;
                true
            }
        }
    }
}

fn check_with(history: &[Operation], budget: &mut Budget) -> CheckResult {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.input.key()).or_default().push(i);
    }
    let mut timed_out = false;
    for (key, idx) in by_key {
        match check_key(history, &idx, budget) {
            KeyResult::Ok => {}
            KeyResult::Timeout => {
                timed_out = true;
                break;
            }
            KeyResult::Stuck(ops) => {
                return CheckResult::NotLinearizable {
                    key: key.to_string(),
                    ops,
                }
            }
        }
    }
    if timed_out {
        CheckResult::Timeout
    } else {
        CheckResult::Linearizable
    }
}

enum KeyResult {
    Ok,
    Timeout,
    Stuck(Vec<usize>),
}

/// A model step, on interned values: state 0 = absent, v+1 = value id v.
#[derive(Clone, Copy, Debug)]
enum Step {
    Put(u32),
    Delete,
    /// Get that returned this state.
    Get(u32),
    /// Cas expecting `expected` (state form) and setting `new`, with its known result.
    Cas {
        expected: u32,
        new: u32,
        result: Option<bool>,
    },
    /// Output inconsistent with the input (e.g. a put answered with a value): never valid.
    Invalid,
}

impl Step {
    /// Applies the step to `state`; `None` if the observed output is impossible there.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Put(v) => Some(v),
            Step::Delete => Some(0),
            Step::Get(v) => (v == state).then_some(state),
            Step::Cas {
                expected,
                new,
                result,
            } => {
                let matches = state == expected;
                match result {
                    Some(r) if r != matches => None,
                    _ => Some(if matches { new } else { state }),
                }
            }
            Step::Invalid => None,
        }
    }
}

struct Interner<'a> {
    ids: HashMap<&'a [u8], u32>,
}

impl<'a> Interner<'a> {
    /// State form: 0 for absent, id+1 for a value.
    fn state(&mut self, v: Option<&'a Vec<u8>>) -> u32 {
        match v {
            None => 0,
            Some(v) => {
                let n = self.ids.len() as u32 + 1;
                *self.ids.entry(v.as_slice()).or_insert(n)
            }
        }
    }
}

fn step_of<'a>(op: &'a Operation, vals: &mut Interner<'a>) -> Step {
    match (&op.input, &op.output) {
        (KvInput::Put { value, .. }, KvOutput::Ok | KvOutput::Unknown) => {
            Step::Put(vals.state(Some(value)))
        }
        (KvInput::Delete { .. }, KvOutput::Ok | KvOutput::Unknown) => Step::Delete,
        (KvInput::Get { .. }, KvOutput::Value(v)) => Step::Get(vals.state(v.as_ref())),
        (KvInput::Cas { expected, new, .. }, KvOutput::CasResult(r)) => Step::Cas {
            expected: vals.state(expected.as_ref()),
            new: vals.state(Some(new)),
            result: Some(*r),
        },
        (KvInput::Cas { expected, new, .. }, KvOutput::Unknown) => Step::Cas {
            expected: vals.state(expected.as_ref()),
            new: vals.state(Some(new)),
            result: None,
        },
        _ => Step::Invalid,
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Bitset {
        Bitset(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

const NIL: usize = usize::MAX;

/// An entry of the call/return list for one key (a doubly linked list over a Vec).
struct Entry {
    /// Local op index.
    op: usize,
    is_call: bool,
    /// For a call, the index of its return entry (and vice versa).
    partner: usize,
    prev: usize,
    next: usize,
}

fn check_key(history: &[Operation], idx: &[usize], budget: &mut Budget) -> KeyResult {
    let mut vals = Interner {
        ids: HashMap::new(),
    };
    // Local ops: (global index, call, ret or None for unknown, step). Unknown reads are dropped.
    let mut ops: Vec<(usize, u64, Option<u64>, Step)> = Vec::with_capacity(idx.len());
    for &g in idx {
        let op = &history[g];
        let unknown = op.output == KvOutput::Unknown;
        if unknown && matches!(op.input, KvInput::Get { .. }) {
            continue;
        }
        let step = step_of(op, &mut vals);
        let ret = if unknown {
            None
        } else {
            Some(op.ret.max(op.call))
        };
        ops.push((g, op.call, ret, step));
    }
    let n = ops.len();
    if n == 0 {
        return KeyResult::Ok;
    }

    // Events sorted by time; at equal times calls first (overlap), unknown returns last.
    // Sort key: (time, kind) with kind 0 = call, 1 = return, 2 = unknown return (time MAX).
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, &(_, call, ret, _)) in ops.iter().enumerate() {
        events.push((call, 0, i));
        match ret {
            Some(r) => events.push((r, 1, i)),
            None => events.push((u64::MAX, 2, i)),
        }
    }
    events.sort_unstable();
    // entries[0] is the head sentinel.
    let mut entries: Vec<Entry> = Vec::with_capacity(2 * n + 1);
    entries.push(Entry {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: NIL,
    });
    let mut call_at = vec![NIL; n];
    let mut unknown_ret = vec![false; 2 * n + 1];
    for &(_, kind, i) in &events {
        let e = entries.len();
        let prev = e - 1;
        entries[prev].next = e;
        let is_call = kind == 0;
        let partner = if is_call { NIL } else { call_at[i] };
        if is_call {
            call_at[i] = e;
        } else {
            entries[partner].partner = e;
            unknown_ret[e] = kind == 2;
        }
        entries.push(Entry {
            op: i,
            is_call,
            partner,
            prev,
            next: NIL,
        });
    }

    fn lift(entries: &mut [Entry], call: usize) {
        let ret = entries[call].partner;
        let (p, nx) = (entries[call].prev, entries[call].next);
        entries[p].next = nx;
        if nx != NIL {
            entries[nx].prev = p;
        }
        let (p, nx) = (entries[ret].prev, entries[ret].next);
        entries[p].next = nx;
        if nx != NIL {
            entries[nx].prev = p;
        }
    }
    fn unlift(entries: &mut [Entry], call: usize) {
        let ret = entries[call].partner;
        let (p, nx) = (entries[ret].prev, entries[ret].next);
        entries[p].next = ret;
        if nx != NIL {
            entries[nx].prev = ret;
        }
        let (p, nx) = (entries[call].prev, entries[call].next);
        entries[p].next = call;
        if nx != NIL {
            entries[nx].prev = call;
        }
    }

    let mut linearized = Bitset::new(n);
    let mut depth = 0usize;
    let mut cache: HashMap<u64, Vec<(Bitset, u32)>> = HashMap::new();
    let mut stack: Vec<(usize, u32)> = Vec::new(); // (call entry, state before)
    let mut state = 0u32;
    let mut entry = entries[0].next;
    let mut best_depth: Option<usize> = None;
    let mut stuck_op = NIL;

    loop {
        let head_next = entries[0].next;
        if head_next == NIL || unknown_ret[head_next] {
            return KeyResult::Ok; // every op with a known outcome is linearized
        }
        if !budget.step() {
            return KeyResult::Timeout;
        }
        if entry == NIL {
            // cannot happen (a return always follows its call), but never loop or panic
            entry = head_next;
        }
        let e = &entries[entry];
        if e.is_call {
            let op = e.op;
            if let Some(next_state) = ops[op].3.apply(state) {
                let mut lin = linearized.clone();
                lin.set(op);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                lin.hash(&mut h);
                next_state.hash(&mut h);
                let slot = cache.entry(h.finish()).or_default();
                if !slot.iter().any(|(b, s)| *s == next_state && *b == lin) {
                    slot.push((lin.clone(), next_state));
                    stack.push((entry, state));
                    state = next_state;
                    linearized = lin;
                    depth += 1;
                    lift(&mut entries, entry);
                    entry = entries[0].next;
                    continue;
                }
            }
            entry = entries[entry].next;
        } else {
            // A return whose op is not linearized: the current prefix is a dead end.
            if best_depth.is_none_or(|b| depth > b) {
                best_depth = Some(depth);
                stuck_op = e.op;
            }
            let Some((call, prev_state)) = stack.pop() else {
                return KeyResult::Stuck(witness(&ops, stuck_op));
            };
            state = prev_state;
            let op = entries[call].op;
            linearized.clear(op);
            depth -= 1;
            unlift(&mut entries, call);
            entry = entries[call].next;
        }
    }
}

/// The stuck op, the ops overlapping it, and up to three ops that completed just before it.
fn witness(ops: &[(usize, u64, Option<u64>, Step)], stuck: usize) -> Vec<usize> {
    if stuck == NIL || stuck >= ops.len() {
        return ops.iter().map(|o| o.0).collect();
    }
    let (g, call, ret, _) = ops[stuck];
    let ret = ret.unwrap_or(u64::MAX);
    let mut out = vec![g];
    let mut overlapping: Vec<(u64, usize)> = Vec::new();
    let mut before: Vec<(u64, usize)> = Vec::new();
    for (i, &(og, oc, or, _)) in ops.iter().enumerate() {
        if i == stuck {
            continue;
        }
        let or = or.unwrap_or(u64::MAX);
        if or < call {
            before.push((or, og));
        } else if oc <= ret {
            overlapping.push((oc, og));
        }
    }
    overlapping.sort_unstable();
    before.sort_unstable_by(|a, b| b.cmp(a));
    out.extend(overlapping.into_iter().map(|x| x.1));
    out.extend(before.into_iter().take(3).map(|x| x.1));
    out
}

/// Parses a history saved as JSON lines (one [`Operation`] per line); bad lines are counted
/// and skipped. Returns the operations and the number of bad lines.
pub fn parse_history(text: &str) -> (Vec<Operation>, usize) {
    let mut ops = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(op) => ops.push(op),
            Err(_) => bad += 1,
        }
    }
    (ops, bad)
}

/// One JSON line per operation, newline-terminated.
pub fn history_to_json_lines(history: &[Operation]) -> String {
    let mut s = String::new();
    for op in history {
        if let Ok(line) = serde_json::to_string(op) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const BUDGET: Duration = Duration::from_secs(10);

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }
    fn put(client: u64, call: u64, ret: u64, key: &str, v: &str) -> Operation {
        Operation {
            client,
            call,
            ret,
            input: KvInput::Put {
                key: key.into(),
                value: b(v),
            },
            output: KvOutput::Ok,
        }
    }
    fn put_unknown(client: u64, call: u64, key: &str, v: &str) -> Operation {
        Operation {
            ret: u64::MAX,
            output: KvOutput::Unknown,
            ..put(client, call, 0, key, v)
        }
    }
    fn get(client: u64, call: u64, ret: u64, key: &str, v: Option<&str>) -> Operation {
        Operation {
            client,
            call,
            ret,
            input: KvInput::Get { key: key.into() },
            output: KvOutput::Value(v.map(b)),
        }
    }
    fn del(client: u64, call: u64, ret: u64, key: &str) -> Operation {
        Operation {
            client,
            call,
            ret,
            input: KvInput::Delete { key: key.into() },
            output: KvOutput::Ok,
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn cas(
        client: u64,
        call: u64,
        ret: u64,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ok: bool,
    ) -> Operation {
        Operation {
            client,
            call,
            ret,
            input: KvInput::Cas {
                key: key.into(),
                expected: expected.map(b),
                new: b(new),
            },
            output: KvOutput::CasResult(ok),
        }
    }

    fn is_bad(r: &CheckResult, key: &str) -> Vec<usize> {
        match r {
            CheckResult::NotLinearizable { key: k, ops } if k == key => ops.clone(),
            other => panic!("expected NotLinearizable on {key}, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(&[], BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn sequential_history_that_matches_the_model_is_linearizable() {
        let h = vec![
            get(1, 0, 1, "x", None),
            put(1, 2, 3, "x", "a"),
            get(1, 4, 5, "x", Some("a")),
            cas(1, 6, 7, "x", Some("a"), "b", true),
            cas(1, 8, 9, "x", Some("a"), "c", false),
            get(1, 10, 11, "x", Some("b")),
            del(1, 12, 13, "x"),
            get(1, 14, 15, "x", None),
            cas(1, 16, 17, "x", None, "d", true),
            get(1, 18, 19, "x", Some("d")),
        ];
        assert_eq!(check(&h, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_not_linearizable() {
        let h = vec![
            put(1, 0, 10, "x", "a"),
            put(1, 20, 30, "x", "b"),
            get(2, 40, 50, "x", Some("a")), // b completed before the read began
        ];
        let ops = is_bad(&check(&h, BUDGET), "x");
        assert_eq!(ops[0], 2, "the stale read is the stuck op: {ops:?}");
    }

    #[test]
    fn lost_update_via_cas_is_not_linearizable() {
        // Two clients both CAS from "0" and both succeed: one update is lost.
        let h = vec![
            put(1, 0, 1, "c", "0"),
            cas(1, 10, 20, "c", Some("0"), "1", true),
            cas(2, 12, 22, "c", Some("0"), "2", true),
        ];
        is_bad(&check(&h, BUDGET), "c");
        // one succeeding and the other failing is fine
        let h = vec![
            put(1, 0, 1, "c", "0"),
            cas(1, 10, 20, "c", Some("0"), "1", true),
            cas(2, 12, 22, "c", Some("0"), "2", false),
            get(3, 30, 31, "c", Some("1")),
        ];
        assert_eq!(check(&h, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn read_of_a_value_never_written_is_not_linearizable() {
        let h = vec![put(1, 0, 10, "x", "a"), get(2, 5, 15, "x", Some("zzz"))];
        is_bad(&check(&h, BUDGET), "x");
    }

    #[test]
    fn concurrent_overlapping_ops_fine_in_some_order_are_linearizable() {
        // put a [0,100], put b [10,90], reads see b then a: order put b, read, put a, read
        let h = vec![
            put(1, 0, 100, "x", "a"),
            put(2, 10, 90, "x", "b"),
            get(3, 20, 30, "x", Some("b")),
            get(3, 40, 200, "x", Some("a")),
        ];
        assert_eq!(check(&h, BUDGET), CheckResult::Linearizable);
        // but once a read has seen a (both puts done), seeing b again is impossible
        let mut h2 = h.clone();
        h2.push(get(4, 210, 220, "x", Some("b")));
        is_bad(&check(&h2, BUDGET), "x");
    }

    #[test]
    fn a_read_may_see_a_write_that_returns_at_the_same_instant() {
        // call == ret of another op counts as overlapping (lenient)
        let h = vec![put(1, 0, 10, "x", "a"), get(2, 10, 20, "x", None)];
        assert_eq!(check(&h, BUDGET), CheckResult::Linearizable);
        let h = vec![put(1, 0, 10, "x", "a"), get(2, 11, 20, "x", None)];
        is_bad(&check(&h, BUDGET), "x");
    }

    #[test]
    fn unknown_outcome_put_later_observed_is_linearizable() {
        let h = vec![
            put(1, 0, 5, "x", "a"),
            put_unknown(2, 10, "x", "b"),
            get(3, 100, 110, "x", Some("b")),
            get(3, 120, 130, "x", Some("b")),
        ];
        assert_eq!(check(&h, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn unknown_outcome_put_never_observed_is_linearizable() {
        let h = vec![
            put(1, 0, 5, "x", "a"),
            put_unknown(2, 10, "x", "b"),
            get(3, 100, 110, "x", Some("a")),
            get(3, 1000, 1010, "x", Some("a")),
        ];
        assert_eq!(check(&h, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn unknown_outcome_put_cannot_take_effect_before_its_call() {
        let h = vec![get(3, 0, 5, "x", Some("b")), put_unknown(2, 10, "x", "b")];
        is_bad(&check(&h, BUDGET), "x");
    }

    #[test]
    fn unknown_outcome_put_cannot_be_observed_then_unobserved() {
        // once b has been read (and nothing else writes), a later read cannot see a again
        let h = vec![
            put(1, 0, 5, "x", "a"),
            put_unknown(2, 10, "x", "b"),
            get(3, 100, 110, "x", Some("b")),
            get(3, 120, 130, "x", Some("a")),
        ];
        is_bad(&check(&h, BUDGET), "x");
    }

    #[test]
    fn unknown_outcome_get_constrains_nothing() {
        let h = vec![
            put(1, 0, 5, "x", "a"),
            Operation {
                ret: u64::MAX,
                output: KvOutput::Unknown,
                ..get(2, 10, 0, "x", None)
            },
        ];
        assert_eq!(check(&h, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn output_of_the_wrong_kind_is_not_linearizable() {
        let mut op = put(1, 0, 5, "x", "a");
        op.output = KvOutput::CasResult(true);
        is_bad(&check(&[op], BUDGET), "x");
    }

    #[test]
    fn keys_are_checked_independently() {
        let h = vec![
            put(1, 0, 10, "a", "1"),
            put(1, 0, 10, "b", "1"),
            get(2, 20, 30, "a", Some("1")),
            get(2, 20, 30, "b", None), // b's write completed: stale
        ];
        let ops = is_bad(&check(&h, BUDGET), "b");
        assert!(ops.contains(&3) && !ops.contains(&0) && !ops.contains(&2));
    }

    #[test]
    fn step_budget_exhausted_returns_timeout() {
        let (h, _) = random_history(5, 200, 8, 3);
        assert_eq!(check_steps(&h, 10), CheckResult::Timeout);
        assert_eq!(check_steps(&h, u64::MAX), CheckResult::Linearizable);
    }

    #[test]
    fn zero_time_budget_returns_timeout_not_a_verdict() {
        let (h, _) = random_history(6, 3000, 8, 4);
        // the deadline is checked before the first step of the first key
        assert_eq!(check(&h, Duration::ZERO), CheckResult::Timeout);
    }

    #[test]
    fn history_round_trips_through_json_lines() {
        let h = vec![
            put(1, 0, 5, "x", "a"),
            put_unknown(2, 10, "x", "b"),
            cas(1, 6, 7, "x", None, "c", false),
            get(3, 100, 110, "x", Some("a")),
            del(1, 3, 4, "y"),
        ];
        let text = history_to_json_lines(&h) + "not json\n\n";
        let (back, bad) = parse_history(&text);
        assert_eq!(back, h);
        assert_eq!(bad, 1);
    }

    /// A history from a real sequential execution: `clients` clients each run ops back to back;
    /// each op takes effect at a random instant inside [call, ret] (the real linearization
    /// point), so the history is linearizable by construction. Values are unique per write.
    /// About 3% of writes time out (Unknown): half of those took effect, half never did.
    /// Returns the history and the linearization points.
    fn random_history(seed: u64, n: usize, clients: u64, keys: u64) -> (Vec<Operation>, Vec<u64>) {
        let mut rng = Rng::new(seed);
        let mut next_free = vec![0u64; clients as usize];
        // (lin point, client, input, unknown?, applies?)
        let mut planned: Vec<(u64, u64, u64, u64, KvInput, bool, bool)> = Vec::new();
        let mut uniq = 0u64;
        for _ in 0..n {
            let c = rng.gen_range(0, clients);
            let call = next_free[c as usize] + rng.gen_range(0, 20);
            let lin = call + rng.gen_range(1, 50);
            let ret = lin + rng.gen_range(1, 50);
            next_free[c as usize] = ret + 1;
            let key = format!("k{}", rng.gen_range(0, keys));
            uniq += 1;
            let v = format!("v{uniq}").into_bytes();
            let input = match rng.gen_range(0, 10) {
                0..=3 => KvInput::Get { key },
                4..=6 => KvInput::Put { key, value: v },
                7 => KvInput::Delete { key },
                _ => KvInput::Cas {
                    key,
                    expected: if rng.gen_bool(0.3) {
                        None
                    } else {
                        Some(format!("v{}", uniq.saturating_sub(rng.gen_range(1, 6))).into_bytes())
                    },
                    new: v,
                },
            };
            let unknown = !matches!(input, KvInput::Get { .. }) && rng.gen_bool(0.03);
            let applies = !unknown || rng.gen_bool(0.5);
            planned.push((lin, c, call, ret, input, unknown, applies));
        }
        // execute in linearization order to learn the outputs
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| planned[i].0);
        let mut store: HashMap<String, Vec<u8>> = HashMap::new();
        let mut outputs = vec![KvOutput::Ok; planned.len()];
        for i in order {
            let (_, _, _, _, input, unknown, applies) = &planned[i];
            let out = match input {
                KvInput::Get { key } => KvOutput::Value(store.get(key).cloned()),
                KvInput::Put { key, value } => {
                    if *applies {
                        store.insert(key.clone(), value.clone());
                    }
                    KvOutput::Ok
                }
                KvInput::Delete { key } => {
                    if *applies {
                        store.remove(key);
                    }
                    KvOutput::Ok
                }
                KvInput::Cas { key, expected, new } => {
                    let ok = store.get(key) == expected.as_ref();
                    if ok && *applies {
                        store.insert(key.clone(), new.clone());
                    }
                    KvOutput::CasResult(ok)
                }
            };
            outputs[i] = if *unknown { KvOutput::Unknown } else { out };
        }
        let lins = planned.iter().map(|p| p.0).collect();
        let h = planned
            .into_iter()
            .zip(outputs)
            .map(
                |((_, client, call, ret, input, unknown, _), output)| Operation {
                    client,
                    call,
                    ret: if unknown { u64::MAX } else { ret },
                    input,
                    output,
                },
            )
            .collect();
        (h, lins)
    }

    #[test]
    fn random_history_from_a_real_execution_is_linearizable() {
        for seed in 0..5 {
            let (h, _) = random_history(seed, 1500, 6, 5);
            assert!(h.iter().any(|o| o.output == KvOutput::Unknown));
            assert_eq!(check(&h, BUDGET), CheckResult::Linearizable, "seed {seed}");
        }
    }

    #[test]
    fn random_history_mutated_to_a_never_written_value_is_not() {
        let (mut h, _) = random_history(11, 1500, 6, 5);
        let i = h
            .iter()
            .position(|o| matches!(o.output, KvOutput::Value(Some(_))))
            .unwrap();
        h[i].output = KvOutput::Value(Some(b("never-written")));
        let key = h[i].input.key().to_string();
        let ops = is_bad(&check(&h, BUDGET), &key);
        assert!(ops.contains(&i), "{i} not in witness {ops:?}");
    }

    #[test]
    fn random_history_mutated_to_a_stale_read_is_not() {
        let (mut h, _) = random_history(12, 1500, 6, 5);
        // a get g, and puts w1 (value v1) and w2 on its key with w1.ret < w2.call and
        // w2.ret < g.call: values are unique, so g cannot return v1.
        let is_put =
            |o: &Operation| matches!(o.input, KvInput::Put { .. }) && o.output == KvOutput::Ok;
        let mut found = None;
        'outer: for (gi, g) in h.iter().enumerate() {
            if !matches!(g.output, KvOutput::Value(_)) {
                continue;
            }
            for (i2, w2) in h.iter().enumerate() {
                if !is_put(w2) || w2.input.key() != g.input.key() || w2.ret >= g.call {
                    continue;
                }
                for w1 in h.iter() {
                    if is_put(w1) && w1.input.key() == g.input.key() && w1.ret < w2.call {
                        if let KvInput::Put { value, .. } = &w1.input {
                            found = Some((gi, value.clone(), i2));
                            break 'outer;
                        }
                    }
                }
            }
        }
        let (gi, v1, _) = found.expect("no candidate");
        h[gi].output = KvOutput::Value(Some(v1));
        let key = h[gi].input.key().to_string();
        is_bad(&check(&h, BUDGET), &key);
    }

    #[test]
    fn random_history_mutated_by_a_wrong_cas_result_is_not() {
        // A CAS that succeeded although a completed write of a unique value had just replaced
        // the value it expected... simplest sure mutation: a CAS expecting a value never written
        // reported as successful.
        let (mut h, _) = random_history(13, 1500, 6, 5);
        let i = h
            .iter()
            .position(|o| o.output == KvOutput::CasResult(false))
            .unwrap();
        if let KvInput::Cas { expected, .. } = &mut h[i].input {
            *expected = Some(b("never-written"));
        }
        h[i].output = KvOutput::CasResult(true);
        let key = h[i].input.key().to_string();
        is_bad(&check(&h, BUDGET), &key);
    }

    #[test]
    fn performance_thousands_of_ops_across_keys() {
        let (h, _) = random_history(21, 10_000, 10, 20);
        let t = std::time::Instant::now();
        let r = check(&h, Duration::from_secs(60));
        let took = t.elapsed();
        eprintln!(
            "lincheck: {} ops, 10 clients, 20 keys: {:?} in {:?}",
            h.len(),
            r,
            took
        );
        assert_eq!(r, CheckResult::Linearizable);
    }
}
