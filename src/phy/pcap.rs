//! A device wrapper that writes every packet in both directions to a pcap file
//! (LINKTYPE_RAW / IPv4), readable by tcpdump and Wireshark.
//!
//! Timestamps: the wall-clock time at `create`, plus how far the stack's
//! `now` has advanced since the first packet. Over a TUN device that is
//! ordinary wall-clock time; in the simulator it is virtual time laid out
//! from the moment the trace was started.

use super::Device;
use crate::time::{Duration, Instant};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Largest packet recorded whole; longer ones are truncated in the trace
/// (their original length is kept).
const SNAPLEN: u32 = 65535;

/// The file behind pcap-file's writer, shared so that we can flush it
/// (pcap-file's writer gives no access to its inner writer). Never contended.
#[derive(Clone)]
struct Sink(Arc<Mutex<BufWriter<File>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

pub struct PcapWriter<D> {
    pub inner: D,
    /// `None` after a write error (tracing stops; the device keeps working).
    writer: Option<pcap_file::pcap::PcapWriter<Sink>>,
    sink: Sink,
    /// Wall-clock time at `create`, since the Unix epoch.
    wall_start: Duration,
    /// The first `now` seen, mapped to `wall_start`.
    first_now: Option<Instant>,
    packets: u64,
}

fn pcap_err(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

impl<D: Device> PcapWriter<D> {
    /// Wrap `inner`, writing a pcap file at `path` (truncated if it exists).
    pub fn create(inner: D, path: &Path) -> io::Result<PcapWriter<D>> {
        let file = File::create(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create pcap file {}: {e}", path.display()),
            )
        })?;
        let sink = Sink(Arc::new(Mutex::new(BufWriter::with_capacity(
            256 * 1024,
            file,
        ))));
        let header = pcap_file::pcap::PcapHeader {
            snaplen: SNAPLEN,
            datalink: pcap_file::DataLink::RAW,
            ts_resolution: pcap_file::TsResolution::MicroSecond,
            endianness: pcap_file::Endianness::native(),
            ..Default::default()
        };
        let writer =
            pcap_file::pcap::PcapWriter::with_header(sink.clone(), header).map_err(pcap_err)?;
        let wall_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(PcapWriter {
            inner,
            writer: Some(writer),
            sink,
            wall_start,
            first_now: None,
            packets: 0,
        })
    }
}

impl<D> PcapWriter<D> {
    /// Packets recorded so far.
    pub fn packets_written(&self) -> u64 {
        self.packets
    }

    /// Push buffered records to the file (also done on drop).
    pub fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }

    fn record(&mut self, now: Instant, packet: &[u8]) {
        let Some(w) = &mut self.writer else { return };
        let first = *self.first_now.get_or_insert(now);
        let ts = self.wall_start + now.saturating_duration_since(first);
        let incl = packet.len().min(SNAPLEN as usize);
        let rec = pcap_file::pcap::PcapPacket::new(ts, packet.len() as u32, &packet[..incl]);
        match w.write_packet(&rec) {
            Ok(_) => self.packets += 1,
            Err(e) => {
                log::warn!("pcap trace stopped: {e}");
                self.writer = None;
            }
        }
    }
}

impl<D> Drop for PcapWriter<D> {
    fn drop(&mut self) {
        if let Err(e) = self.sink.flush() {
            log::warn!("pcap trace: final flush failed: {e}");
        }
    }
}

impl<D: AsRawFd> AsRawFd for PcapWriter<D> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<D: Device> Device for PcapWriter<D> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let r = self.inner.recv(now, buf)?;
        if let Some(n) = r {
            self.record(now, &buf[..n]);
        }
        Ok(r)
    }

    fn recv_vec(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Option<io::Result<Option<usize>>> {
        let r = self.inner.recv_vec(now, buf, max)?;
        if let Ok(Some(n)) = r {
            self.record(now, &buf[..n]);
        }
        Some(r)
    }

    fn send(&mut self, now: Instant, packet: &[u8]) -> io::Result<bool> {
        let sent = self.inner.send(now, packet)?;
        if sent {
            self.record(now, packet);
        }
        Ok(sent)
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }

    fn capabilities(&self) -> super::Capabilities {
        self.inner.capabilities()
    }

    fn rx_checksum_trusted(&self) -> bool {
        self.inner.rx_checksum_trusted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phy::queue::QueueDevice;

    /// A minimal valid IPv4/UDP packet (checksums correct) so tcpdump decodes it.
    fn udp_packet(id: u16, payload: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[198, 19, 0, 1]);
        p[16..20].copy_from_slice(&[198, 19, 0, 2]);
        let mut sum = 0u32;
        for c in p[..20].chunks(2) {
            sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p[20..22].copy_from_slice(&4000u16.to_be_bytes());
        p[22..24].copy_from_slice(&7u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }

    fn temp_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("tunstack-pcap-{tag}-{}.pcap", std::process::id()))
    }

    #[test]
    fn records_both_directions_with_raw_linktype_and_relative_timestamps() {
        let path = temp_path("rt");
        let inbound = udp_packet(1, b"from the wire");
        let outbound = udp_packet(2, b"from the stack");
        let mut q = QueueDevice::new(1500);
        q.rx.push_back(inbound.clone());
        {
            let mut dev = PcapWriter::create(q, &path).unwrap();
            let mut buf = vec![0u8; 1500];
            let t0 = Instant::from_secs(100);
            let n = dev.recv(t0, &mut buf).unwrap().unwrap();
            assert_eq!(&buf[..n], &inbound[..]);
            assert!(dev.recv(t0, &mut buf).unwrap().is_none());
            assert!(dev
                .send(t0 + Duration::from_millis(1500), &outbound)
                .unwrap());
            assert_eq!(dev.packets_written(), 2);
            assert_eq!(dev.inner.tx.len(), 1);
        } // drop flushes
        let f = File::open(&path).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        assert_eq!(r.header().datalink, pcap_file::DataLink::RAW);
        let a = r.next_packet().unwrap().unwrap().into_owned();
        let b = r.next_packet().unwrap().unwrap().into_owned();
        assert!(r.next_packet().is_none());
        assert_eq!(&a.data[..], &inbound[..]);
        assert_eq!(&b.data[..], &outbound[..]);
        assert_eq!(a.orig_len as usize, inbound.len());
        assert_eq!(b.timestamp - a.timestamp, Duration::from_millis(1500));

        // tcpdump, if present, must decode the IPv4 packets directly.
        if let Ok(out) = std::process::Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&path)
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "tcpdump failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(
                text.contains("198.19.0.1.4000 > 198.19.0.2.7: UDP"),
                "{text}"
            );
        } else {
            eprintln!("tcpdump not installed: skipping the tcpdump -r check");
        }
        let _ = std::fs::remove_file(&path);
    }

    /// A queue that also receives into vectors, as the TUN does.
    struct VecRx(QueueDevice);

    impl Device for VecRx {
        fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
            self.0.recv(now, buf)
        }
        fn recv_vec(
            &mut self,
            _now: Instant,
            buf: &mut Vec<u8>,
            max: usize,
        ) -> Option<io::Result<Option<usize>>> {
            Some(Ok(self.0.rx.pop_front().map(|p| {
                buf.clear();
                buf.extend_from_slice(&p[..p.len().min(max)]);
                buf.len()
            })))
        }
        fn send(&mut self, now: Instant, packet: &[u8]) -> io::Result<bool> {
            self.0.send(now, packet)
        }
        fn mtu(&self) -> usize {
            self.0.mtu()
        }
    }

    #[test]
    fn packets_received_into_vectors_are_recorded() {
        let path = temp_path("vec");
        let inbound = udp_packet(4, b"read into a vector");
        let mut q = QueueDevice::new(1500);
        q.rx.push_back(inbound.clone());
        let mut dev = PcapWriter::create(VecRx(q), &path).unwrap();
        let mut buf = Vec::new();
        let n = dev
            .recv_vec(Instant::ZERO, &mut buf, 1500)
            .unwrap()
            .unwrap();
        assert_eq!(n, Some(inbound.len()));
        assert_eq!(buf, inbound);
        assert!(matches!(
            dev.recv_vec(Instant::ZERO, &mut buf, 1500),
            Some(Ok(None))
        ));
        // A device without recv_vec: the wrapper says so too.
        let path2 = temp_path("vec2");
        let mut plain = PcapWriter::create(QueueDevice::new(1500), &path2).unwrap();
        assert!(plain.recv_vec(Instant::ZERO, &mut buf, 1500).is_none());
        drop(plain);
        let _ = std::fs::remove_file(&path2);
        assert_eq!(dev.packets_written(), 1);
        drop(dev);
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(&r.next_packet().unwrap().unwrap().data[..], &inbound[..]);
        assert!(r.next_packet().is_none());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refused_sends_are_not_recorded() {
        let path = temp_path("refused");
        let mut q = QueueDevice::new(1500);
        q.tx_limit = 0;
        let mut dev = PcapWriter::create(q, &path).unwrap();
        assert!(!dev.send(Instant::ZERO, &udp_packet(3, b"x")).unwrap());
        assert_eq!(dev.packets_written(), 0);
        drop(dev);
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
        assert!(r.next_packet().is_none());
        let _ = std::fs::remove_file(&path);
    }
}
