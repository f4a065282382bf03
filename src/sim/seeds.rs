//! Seeds for simulator runs: from the environment for replay, and a
//! multi-seed runner that names the failing seed.

use std::hash::Hasher;
use std::panic::{self, AssertUnwindSafe};

/// The seed to replay, from `TUNSTACK_SEED` (decimal or `0x` hex); `default`
/// when the variable is unset or empty.
///
/// Panics if it is set to something that is not a number: a replay that
/// silently ran another seed would mislead.
pub fn seed_from_env(default: u64) -> u64 {
    match std::env::var("TUNSTACK_SEED") {
        Ok(s) if !s.trim().is_empty() => parse_seed(&s)
            .unwrap_or_else(|| panic!("TUNSTACK_SEED={s:?} is not a number (decimal or 0x hex)")),
        _ => default,
    }
}

/// Parse a seed written in decimal or `0x` hexadecimal.
pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// How many seeds [`for_each_seed`] runs: `TUNSTACK_SIM_SEEDS`, default 20 (about 15 s for tests/sim.rs in release mode on 2 cores).
pub fn seed_count() -> u64 {
    std::env::var("TUNSTACK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(20)
}

/// The `i`-th seed of test `name`: fixed, so a plain `cargo test` is
/// repeatable, and different per test so tests do not share fault patterns.
pub fn nth_seed(name: &str, i: u64) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0x7475_6e73, 0x7461_636b);
    h.write(name.as_bytes());
    h.write_u64(i);
    h.finish()
}

/// Run `f` once per seed: only `TUNSTACK_SEED` if it is set, otherwise
/// [`seed_count`] seeds derived from `name`. A failing run prints
/// `TUNSTACK_SEED=<n>` and the command that replays it, then fails the test
/// with the original panic.
pub fn for_each_seed(name: &str, mut f: impl FnMut(u64)) {
    let seeds: Vec<u64> = match std::env::var("TUNSTACK_SEED") {
        Ok(s) if !s.trim().is_empty() => vec![seed_from_env(0)],
        _ => (0..seed_count()).map(|i| nth_seed(name, i)).collect(),
    };
    for seed in seeds {
        if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| f(seed))) {
            eprintln!(
                "\n{name} failed with TUNSTACK_SEED={seed}\n  replay: TUNSTACK_SEED={seed} cargo test --release --test sim -- {name} --exact\n"
            );
            panic::resume_unwind(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2a "), Some(42));
        assert_eq!(parse_seed("forty"), None);
    }

    #[test]
    fn per_test_seeds_are_fixed_and_distinct() {
        assert_eq!(nth_seed("a", 0), nth_seed("a", 0));
        assert_ne!(nth_seed("a", 0), nth_seed("a", 1));
        assert_ne!(nth_seed("a", 0), nth_seed("b", 0));
    }

    #[test]
    fn failing_seed_is_reported_and_the_panic_propagates() {
        if std::env::var("TUNSTACK_SEED").is_ok_and(|s| !s.is_empty()) || seed_count() < 2 {
            return; // the environment pins fewer seeds than this test needs
        }
        let mut ran = Vec::new();
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            for_each_seed("failing_seed_test", |s| {
                ran.push(s);
                if ran.len() == 2 {
                    panic!("boom at {s}");
                }
            })
        }));
        let e = r.expect_err("the panic must propagate");
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(msg, format!("boom at {}", ran[1]));
        assert_eq!(ran.len(), 2, "runs stop at the first failing seed");
    }
}
