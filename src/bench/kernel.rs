//! The ceiling: the kernel's own TCP over a veth pair between two network
//! namespaces (both made here), offloads switched off or left on.

use super::common::*;
use super::env;
use crate::netns;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

const VETH_A: &str = "tsbveth0";
const VETH_B: &str = "tsbveth1";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 19, 4, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 19, 4, 2);
const PORT: u16 = 5001;
const TICK: Duration = Duration::from_millis(100);

/// Parameters of one kernel-over-veth transfer (MTU 1500 on both ends).
#[derive(Clone, Copy, Debug)]
pub struct VethParams {
    /// Leave TSO/GSO/GRO and checksum offloads on (true) or switch them off
    /// with ethtool (false; fails if ethtool is missing).
    pub offloads: bool,
    pub loss_percent: u32,
    pub volume: u64,
    pub min_time: Duration,
    pub max_time: Duration,
}

fn bring_up_end(dev: &str, addr: Ipv4Addr, offloads: bool) -> io::Result<()> {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
    netns::run("ip", &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
    netns::run("ip", &["link", "set", "dev", dev, "up"])?;
    if !offloads {
        env::set_offloads(dev, false)?;
    }
    Ok(())
}

/// Bulk TCP from a kernel socket in namespace A to one in namespace B over
/// a veth pair; loss (nftables) where packets arrive, at both ends.
/// Measured at the receiver, like the TUN measurements.
pub fn veth_bulk(p: VethParams) -> io::Result<Bulk> {
    if !p.offloads && !env::have_ethtool() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "ethtool is not installed (apt-get install ethtool): cannot switch veth offloads off",
        ));
    }
    netns::in_new_netns(move || -> io::Result<Bulk> {
        // Namespace B: a thread of ours in its own fresh namespace.
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let receiver = std::thread::Builder::new()
            .name("tsbench-vethB".into())
            .spawn(move || -> io::Result<(u64, f64)> {
                let r = netns::unshare_net();
                let _ = tid_tx.send(r.as_ref().map(|_| env::gettid()).map_err(|e| e.to_string()));
                r?;
                if go_rx.recv().is_err() {
                    return Err(io::Error::other("namespace A gave up"));
                }
                let l = bring_up_end(VETH_B, ADDR_B, p.offloads)
                    .and_then(|_| env::install_ingress_loss(VETH_B, p.loss_percent))
                    .and_then(|_| TcpListener::bind((ADDR_B, PORT)));
                let l = match l {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                let (mut s, _) = l.accept()?;
                s.set_read_timeout(Some(TICK))?;
                receive_for(&mut s, p.volume, p.min_time, p.max_time)
            })?;
        let tid = tid_rx
            .recv()
            .map_err(|_| io::Error::other("namespace B thread died"))?
            .map_err(io::Error::other)?;
        let setup = (|| -> io::Result<()> {
            netns::run(
                "ip",
                &[
                    "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B,
                ],
            )?;
            netns::run("ip", &["link", "set", VETH_B, "netns", &tid.to_string()])?;
            bring_up_end(VETH_A, ADDR_A, p.offloads)?;
            // Loss on arrival at each end (data at B, ACKs at A): a drop on
            // the way out of A would be reported to the sender.
            env::install_ingress_loss(VETH_A, p.loss_percent)
        })();
        if let Err(e) = setup {
            drop(go_tx);
            let _ = receiver.join();
            return Err(e);
        }
        let _ = go_tx.send(());
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("namespace B thread died"))??;
        let k = env::kernel_connect_cc(SocketAddrV4::new(ADDR_B, PORT), Duration::from_secs(10))?;
        k.set_write_timeout(Some(TICK))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let mut k2 = k.try_clone()?;
        let writer = std::thread::spawn(move || send_until(&mut k2, &stop2));
        let r = receiver
            .join()
            .map_err(|_| io::Error::other("receiver panicked"));
        stop.store(true, Ordering::Relaxed);
        let _ = k.shutdown(Shutdown::Both);
        let _ = writer.join();
        let (bytes, secs) = r??;
        Ok(Bulk {
            bytes,
            secs,
            cpu_secs: None,
            kernel_share: None,
            machine_busy: None,
        })
    })?
}
