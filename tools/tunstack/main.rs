//! `tunstack`: the command-line front end. Argument parsing and printing
//! only; the work is library calls (`tunstack::up`, `tunstack::services`).

use clap::{Args, Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use tunstack::netns::Ipv4Cidr;
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
}

impl StackFlags {
    fn options(&self) -> UpOptions {
        UpOptions {
            tun: self.tun.clone(),
            addr: self.addr,
            peer: self.peer,
            mtu: self.mtu,
            pcap: self.pcap.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Bring a stack up on a TUN device and serve echo (TCP/UDP 7), discard (9) and chargen (19) until Ctrl-C.
    Up {
        #[command(flatten)]
        stack: StackFlags,
    },
    /// Measure tunstack beside smoltcp and the kernel (throughput, loss, latency, CPU, memory) in private namespaces; needs root.
    Bench {
        /// Smaller transfers and fewer repetitions: finishes within a minute (for CI).
        #[arg(long)]
        quick: bool,
        /// Also write the table and every figure as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Up { stack } => cmd_up(&stack),
        Command::Bench { quick, json } => tunstack::bench::cli(quick, json.as_deref()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunstack: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_up(flags: &StackFlags) -> Result<(), String> {
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
    println!("  echo       tcp {a}:7, udp {a}:7");
    println!("  discard    tcp {a}:9");
    println!("  chargen    tcp {a}:19");
    if let Some(p) = &opts.pcap {
        println!("  pcap       {}", p.display());
    }
    println!(
        "Ctrl-C stops the stack{}.",
        if running.created {
            " and removes the device"
        } else {
            ""
        }
    );
    let _ = rx.recv();
    let stats = running.net.stats();
    println!(
        "stopping: {} packets in, {} out, {} TCP connections opened",
        stats.ip.rx_packets, stats.ip.tx_packets, stats.tcp_conns_opened
    );
    drop(running);
    Ok(())
}
