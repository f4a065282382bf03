//! `tunstack`: the command-line front end. Argument parsing and printing
//! only; the work is library calls (`tunstack::up`, `tunstack::services`).

mod kv;

use clap::{Args, Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tunstack::curl::{self, CurlOptions};
use tunstack::dns::dig;
use tunstack::dns::driver::SharedResolver;
use tunstack::dns::hints::RootHints;
use tunstack::dns::resolver::ResolverConfig;
use tunstack::dns::server::{self, ServerStats};
use tunstack::dns::transport::StackTransport;
use tunstack::netns::Ipv4Cidr;
use tunstack::services::HttpOptions;
use tunstack::up::{self, UpOptions};

#[derive(Parser)]
#[command(
    name = "tunstack",
    version,
    about = "A userspace TCP/IP stack on a Linux TUN device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by every subcommand that brings up a stack.
#[derive(Args, Clone, Debug)]
struct StackFlags {
    /// TUN device name (created if missing, attached to if it exists).
    #[arg(long, default_value = up::DEFAULT_TUN)]
    tun: String,
    /// The stack's IPv4 address.
    #[arg(long, default_value_t = up::DEFAULT_ADDR)]
    addr: Ipv4Addr,
    /// The kernel side's address/prefix; the prefix is the route to the stack.
    #[arg(long, default_value = up::DEFAULT_PEER)]
    peer: Ipv4Cidr,
    /// MTU of the TUN device (576..=65535).
    #[arg(long, default_value_t = up::DEFAULT_MTU)]
    mtu: usize,
    /// Write every packet to this pcap file (tcpdump -r FILE reads it).
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Open the TUN with a virtio-net header and kernel TSO/GSO and checksum offload (64 KB per read/write); falls back if refused.
    #[arg(long)]
    offload: bool,
    /// Drop this percentage of the packets the stack receives (seeded, in the device layer): loss the kernel's sender cannot see, to watch recovery.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    rx_loss: f64,
}

impl StackFlags {
    fn options(&self) -> UpOptions {
        UpOptions {
            tun: self.tun.clone(),
            addr: self.addr,
            peer: self.peer,
            mtu: self.mtu,
            pcap: self.pcap.clone(),
            offload: self.offload,
            rx_loss_percent: self.rx_loss,
        }
    }
}

/// Stack flags for client subcommands: a short-lived stack of their own,
/// by default on 198.19.1.0/24 and device tunstack1 so that it works beside
/// a running `tunstack up`.
#[derive(Args, Clone, Debug)]
struct ClientStackFlags {
    /// TUN device name (created if missing, attached to if it exists).
    #[arg(long, default_value = curl::DEFAULT_TUN)]
    tun: String,
    /// The stack's IPv4 address.
    #[arg(long, default_value_t = curl::DEFAULT_ADDR)]
    addr: Ipv4Addr,
    /// The kernel side's address/prefix; the prefix is the route to the stack.
    #[arg(long, default_value = curl::DEFAULT_PEER)]
    peer: Ipv4Cidr,
    /// MTU of the TUN device (576..=65535).
    #[arg(long, default_value_t = up::DEFAULT_MTU)]
    mtu: usize,
    /// Write every packet to this pcap file (tcpdump -r FILE reads it).
    #[arg(long)]
    pcap: Option<PathBuf>,
}

impl ClientStackFlags {
    fn options(&self) -> UpOptions {
        UpOptions {
            tun: self.tun.clone(),
            addr: self.addr,
            peer: self.peer,
            mtu: self.mtu,
            pcap: self.pcap.clone(),
            offload: false,
            rx_loss_percent: 0.0,
        }
    }
}

/// HTTP and HTTPS service flags of `up`.
#[derive(Args, Clone, Debug)]
struct HttpFlags {
    /// Keep the CA and server keys here (CA at DIR/ca.pem) [default: $XDG_STATE_HOME/tunstack, ~/.local/state/tunstack, or /var/lib/tunstack for root].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve this certificate chain (PEM) on HTTPS instead of the generated one (needs --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Mutual TLS: HTTPS demands a client certificate signed by a CA in FILE.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Serve files from DIR (paths the built-in endpoints do not take).
    #[arg(long, value_name = "DIR")]
    www: Option<PathBuf>,
}

/// The stack flags of `up`, with `dig`'s own defaults (its own device and
/// subnet, so it works beside a running `up` and `curl`).
#[derive(Args, Clone, Debug)]
struct DigStackFlags {
    /// TUN device name (created if missing, attached to if it exists).
    #[arg(long, default_value = tunstack::dns::dig::DEFAULT_TUN)]
    tun: String,
    /// The stack's IPv4 address.
    #[arg(long, default_value_t = tunstack::dns::dig::DEFAULT_ADDR)]
    addr: Ipv4Addr,
    /// The kernel side's address/prefix; the prefix is the route to the stack.
    #[arg(long, default_value = tunstack::dns::dig::DEFAULT_PEER)]
    peer: Ipv4Cidr,
    /// MTU of the TUN device (576..=65535).
    #[arg(long, default_value_t = up::DEFAULT_MTU)]
    mtu: usize,
    /// Write every packet to this pcap file (tcpdump -r FILE reads it).
    #[arg(long)]
    pcap: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// The Raft-replicated key-value store: run a cluster or a node, read and write, status, faults, traces.
    Kv {
        #[command(subcommand)]
        cmd: kv::KvCommand,
    },
    /// Bring a stack up on a TUN device and serve HTTP (80), HTTPS (443), echo (TCP/UDP 7), discard (9) and chargen (19) until Ctrl-C.
    Up {
        #[command(flatten)]
        stack: StackFlags,
        #[command(flatten)]
        http: HttpFlags,
        /// Also serve recursive DNS on UDP and TCP port 53 of the stack address.
        #[arg(long)]
        dns: bool,
        /// Root hints (named.root format) for --dns; default: the real root servers.
        #[arg(long, value_name = "FILE", requires = "dns")]
        root_hints: Option<PathBuf>,
        /// Print the TCP connections like `ss -ti` every SECS seconds (also at /connections).
        #[arg(long, value_name = "SECS")]
        stats_every: Option<u64>,
    },
    /// Look up a DNS name through a stack of its own (device tunstack2,
    /// 198.19.2.2 beside kernel 198.19.2.1/24): iteratively from the root
    /// hints, or ask @SERVER. Output like BIND's dig.
    Dig {
        #[command(flatten)]
        stack: DigStackFlags,
        /// Server port.
        #[arg(short = 'p', value_name = "PORT")]
        port: Option<u16>,
        /// Record type (also accepted as a positional TYPE).
        #[arg(short = 't', value_name = "TYPE")]
        rtype: Option<String>,
        /// Reverse lookup (PTR) of this address.
        #[arg(short = 'x', value_name = "ADDR")]
        reverse: Option<String>,
        /// Root hints (named.root format); default: the real root servers.
        #[arg(long, value_name = "FILE")]
        root_hints: Option<PathBuf>,
        /// [@SERVER] NAME [TYPE] [+short] [+tcp] [+trace] [+norecurse]
        #[arg(value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Fetch an http:// or https:// URL with a short-lived stack of its own as the client.
    Curl {
        #[command(flatten)]
        stack: ClientStackFlags,
        /// Show connection and TLS details on stderr.
        #[arg(short, long)]
        verbose: bool,
        /// Trust the CA certificates in FILE (PEM) instead of Mozilla's roots.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// Write the body to FILE (progress on stderr) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Present this client certificate (PEM) for mutual TLS (needs --key).
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) of --cert.
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Seconds to wait for the connection.
        #[arg(long, default_value_t = 10)]
        connect_timeout: u64,
        url: String,
    },
    /// Measure tunstack beside smoltcp and the kernel (throughput, loss, latency, CPU, memory) in private namespaces; needs root.
    Bench {
        /// Smaller transfers and fewer repetitions: finishes within a minute (for CI).
        #[arg(long)]
        quick: bool,
        /// Also write the table and every figure as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Run only these sections (comma-separated: tcp, dns, kv).
        #[arg(long, value_name = "SECTIONS")]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Kv { cmd } => kv::run(cmd),
        Command::Bench { quick, json, only } => {
            tunstack::bench::cli(quick, json.as_deref(), only.as_deref())
        }
        Command::Up {
            stack,
            http,
            dns,
            root_hints,
            stats_every,
        } => cmd_up(&stack, &http, dns, root_hints.as_deref(), stats_every),
        Command::Dig {
            stack,
            port,
            rtype,
            reverse,
            root_hints,
            args,
        } => cmd_dig(&stack, port, rtype, reverse, root_hints.as_deref(), args),
        Command::Curl {
            stack,
            verbose,
            cacert,
            output,
            cert,
            key,
            connect_timeout,
            url,
        } => cmd_curl(
            &stack,
            CurlOptions {
                url,
                verbose,
                cacert,
                output,
                cert: cert.zip(key),
                connect_timeout: std::time::Duration::from_secs(connect_timeout),
            },
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunstack: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_curl(flags: &ClientStackFlags, opts: CurlOptions) -> Result<(), String> {
    let stack = flags.options();
    stack.validate()?;
    // Check the URL before touching the system.
    tunstack::http::client::Url::parse(&opts.url).map_err(|e| e.to_string())?;
    let running = up::bring_up(&stack)
        .map_err(|e| format!("cannot bring the stack up on {}: {e}", stack.tun))?;
    if opts.verbose {
        eprintln!(
            "* Stack {} on {} ({}), kernel {}, MTU {}",
            stack.addr,
            stack.tun,
            if running.created {
                "created"
            } else {
                "attached"
            },
            stack.peer,
            stack.mtu
        );
    }
    let net = Arc::new(running.net);
    let stderr: Arc<Mutex<dyn std::io::Write + Send>> = Arc::new(Mutex::new(std::io::stderr()));
    let r = curl::run(net.clone(), &opts, &mut std::io::stdout().lock(), stderr);
    curl::linger(&net, std::time::Duration::from_secs(1));
    // Stop the stack (closing the device removes it if we created it).
    match Arc::try_unwrap(net) {
        Ok(net) => {
            let _ = net.stop();
        }
        Err(net) => drop(net),
    }
    r.map(|_| ())
}

fn load_hints(path: Option<&std::path::Path>) -> Result<(RootHints, String), String> {
    match path {
        Some(p) => Ok((RootHints::from_file(p)?, p.display().to_string())),
        None => Ok((
            RootHints::builtin(),
            "built-in (the real root servers)".into(),
        )),
    }
}

fn cmd_dig(
    flags: &DigStackFlags,
    port: Option<u16>,
    rtype: Option<String>,
    reverse: Option<String>,
    root_hints: Option<&std::path::Path>,
    mut args: Vec<String>,
) -> Result<(), String> {
    if let Some(p) = port {
        args.extend(["-p".into(), p.to_string()]);
    }
    if let Some(t) = rtype {
        args.extend(["-t".into(), t]);
    }
    if let Some(x) = reverse {
        args.extend(["-x".into(), x]);
    }
    let opts = dig::parse_args(&args)?;
    let (hints, origin) = load_hints(root_hints)?;
    let up_opts = UpOptions {
        tun: flags.tun.clone(),
        addr: flags.addr,
        peer: flags.peer,
        mtu: flags.mtu,
        pcap: flags.pcap.clone(),
        offload: false,
        rx_loss_percent: 0.0,
    };
    up_opts.validate()?;
    let running = up::bring_up(&up_opts)
        .map_err(|e| format!("cannot bring the stack up on {}: {e}", up_opts.tun))?;
    let out = dig::run(
        StackTransport::new(&running.net),
        &opts,
        hints,
        &origin,
        tunstack::rng::Rng::from_os(),
    )?;
    print!("{out}");
    drop(running);
    Ok(())
}

fn cmd_up(
    flags: &StackFlags,
    http: &HttpFlags,
    dns: bool,
    root_hints: Option<&std::path::Path>,
    stats_every: Option<u64>,
) -> Result<(), String> {
    let opts = flags.options();
    opts.validate()?;
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C/SIGTERM handler: {e}"))?;
    let running = up::bring_up(&opts)
        .map_err(|e| format!("cannot bring the stack up on {}: {e}", opts.tun))?;
    tunstack::services::start_standard(&running.net)
        .map_err(|e| format!("cannot start services: {e}"))?;
    let http_opts = HttpOptions {
        state_dir: http
            .state_dir
            .clone()
            .unwrap_or_else(tunstack::tls::default_state_dir),
        cert: http.cert.clone().zip(http.key.clone()),
        client_ca: http.client_ca.clone(),
        www: http.www.clone(),
        ..HttpOptions::default()
    };
    let explicit = http.state_dir.is_some() || http.cert.is_some() || http.client_ca.is_some();
    let mut https_problem = None;
    let web = match tunstack::services::start_http(&running.net, &http_opts) {
        Ok(w) => w,
        // The default state directory may be unusable (e.g. an unprivileged
        // user whose HOME is not theirs): serve plain HTTP and say why
        // HTTPS is off. Flags the user gave are never ignored silently.
        Err(e) if !explicit => {
            https_problem = Some(e.to_string());
            let plain = HttpOptions {
                https_port: None,
                ..http_opts.clone()
            };
            tunstack::services::start_http(&running.net, &plain)
                .map_err(|e| format!("cannot start HTTP: {e}"))?
        }
        Err(e) => return Err(format!("cannot start HTTP/HTTPS: {e}")),
    };
    let a = opts.addr;
    println!(
        "tunstack up on {} ({}): stack {a}, kernel {}, MTU {}",
        opts.tun,
        if running.created {
            "created"
        } else {
            "attached"
        },
        opts.peer,
        opts.mtu
    );
    println!("  ping       ping {a}");
    println!("  http       curl http://{a}/   (/status, /bytes/N, /echo)");
    match &web.ca_path {
        _ if https_problem.is_some() => println!(
            "  https      off: {} (choose a writable --state-dir DIR)",
            https_problem.as_deref().unwrap_or_default()
        ),
        Some(ca) => {
            println!("  https      curl --cacert {} https://{a}/", ca.display());
            println!("  CA         {}", ca.display());
        }
        None => println!("  https      https://{a}/ (your certificate)"),
    }
    if let Some(ca) = &http_opts.client_ca {
        println!(
            "  mTLS       HTTPS demands a client certificate signed by {}",
            ca.display()
        );
    }
    if let Some(w) = &http_opts.www {
        println!("  files      {}", w.display());
    }
    println!("  echo       tcp {a}:7, udp {a}:7");
    println!("  discard    tcp {a}:9");
    println!("  chargen    tcp {a}:19");
    println!("  ss         curl http://{a}/connections   (or .json)");
    if let Some(secs) = stats_every {
        tunstack::services::print_connections_every(&running.net, secs);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let dns_stats = ServerStats::default();
    let hints = if dns {
        let (h, origin) = load_hints(root_hints)?;
        println!("  dns        udp/tcp {a}:53 (recursive, root hints {origin}): dig @{a} NAME");
        Some(h)
    } else {
        None
    };
    if let Some(p) = &opts.pcap {
        println!("  pcap       {}", p.display());
    }
    if opts.rx_loss_percent > 0.0 {
        println!(
            "  rx loss    {}% of received packets dropped (seeded)",
            opts.rx_loss_percent
        );
    }
    println!(
        "  device I/O {}",
        if running.batched {
            "io_uring, one system call per batch of packets"
        } else {
            "one system call per packet (no io_uring, or TUNSTACK_URING=off)"
        }
    );
    if opts.offload {
        match &running.offload_refused {
            None => println!("  offload    vnet header, TSO/GSO and checksum offload on"),
            Some(why) => println!("  offload    refused by the kernel ({why}): plain TUN"),
        }
    }
    println!(
        "Ctrl-C stops the stack{}.",
        if running.created {
            " and removes the device"
        } else {
            ""
        }
    );
    let failed = std::thread::scope(|s| {
        if let Some(h) = hints {
            let (net, stats, stop) = (&running.net, &dns_stats, &stop);
            s.spawn(move || {
                let resolver = SharedResolver::new(
                    h,
                    ResolverConfig::default(),
                    tunstack::rng::Rng::from_os(),
                );
                if let Err(e) = server::serve(net, 53, &resolver, stats, stop) {
                    eprintln!("tunstack: dns server: {e}");
                }
            });
        }
        // Until Ctrl-C, or until the stack stops on its own (its device
        // was deleted): then say why and exit non-zero.
        let failed = loop {
            match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(why) = running.net.failure() {
                        break Some(why);
                    }
                }
                _ => break None,
            }
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        failed
    });
    if dns {
        let ld = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "dns: {} UDP and {} TCP queries, {} from cache, {} upstream queries",
            ld(&dns_stats.udp_queries),
            ld(&dns_stats.tcp_queries),
            ld(&dns_stats.cache_answers),
            ld(&dns_stats.upstream_queries)
        );
    }
    let stats = running.net.stats();
    println!(
        "stopping: {} packets in, {} out, {} TCP connections opened",
        stats.ip.rx_packets, stats.ip.tx_packets, stats.tcp_conns_opened
    );
    drop(running);
    match failed {
        Some(why) => Err(format!("the stack on {} stopped: {why}", opts.tun)),
        None => Ok(()),
    }
}
