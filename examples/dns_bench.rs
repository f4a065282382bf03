//! Run only the DNS section of `tunstack bench` (needs root, dnsperf, NSD
//! and Unbound): `cargo run --release --example dns_bench [-- full]`.
//! With `TUNSTACK_DNS_BENCH_PAUSE=SECS` the cached run against ours is
//! preceded by a pause, so `perf record -p PID` can be attached.
use tunstack::bench::dns::{run, DnsParams};

fn main() {
    let full = std::env::args().any(|a| a == "full");
    let p = if full {
        DnsParams::full()
    } else {
        DnsParams::quick()
    };
    match run(p) {
        Ok(r) => println!("{}\n{r:?}", r.summary()),
        Err(e) => {
            eprintln!("dns bench failed: {e}");
            std::process::exit(1);
        }
    }
}
