//! A device wrapper that writes every packet in both directions to a pcap file
//! (LINKTYPE_RAW / IPv4), readable by tcpdump and Wireshark.

pub struct PcapWriter<D> {
    pub inner: D,
}
