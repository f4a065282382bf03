//! Run only the DNS section of `tunstack bench` (needs root, dnsperf, NSD
//! and Unbound): `cargo run --release --example dns_bench [-- full]`.
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
