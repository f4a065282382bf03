#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/TARGET (run from fuzz/).
Each seed is a real message of the kind the target parses: TCP/IP packets
like those in tests/stack.rs, DNS queries and referrals/answers, HTTP
requests, KV frames."""
import os, struct

def put(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def rec(ctl, body):
    return bytes([ctl]) + struct.pack(">H", len(body)) + body

# ---- TCP/IPv4 (checksums are filled in by the stack_input harness, ctl bit 0)
def ip(proto, payload, flags_frag=0):
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, flags_frag, 64, proto, 0,
                    bytes([198, 19, 0, 1]), bytes([198, 19, 0, 2]))
    return h + payload

def tcp(sport, dport, seq, ack, flags, opts=b"", payload=b"", win=64240):
    off = (20 + len(opts)) // 4
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, win, 0, 0) + opts + payload

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
SYN_OPTS = bytes([2, 4, 5, 0xb4, 4, 2, 8, 10]) + struct.pack(">II", 1, 0) + bytes([1, 3, 3, 7])
SACK_OPTS = bytes([1, 1, 5, 10]) + struct.pack(">II", 100, 200)
TS_OPTS = bytes([1, 1, 8, 10]) + struct.pack(">II", 5, 6)

# Relative seq/ack (ctl bit 1): seq 1 = the first data byte after the SYN.
est = [
    rec(0x03 | (1 << 2) | (1 << 5), ip(6, tcp(40000, 80, 1, 1, ACK | PSH, payload=b"GET / HTTP/1.1\r\n\r\n"))),
    rec(0x03 | (2 << 2) | (1 << 5), ip(6, tcp(40000, 80, 19, 22, ACK))),
    rec(0x03 | (3 << 2), ip(6, tcp(40000, 80, 50, 22, ACK, opts=SACK_OPTS, payload=b"x" * 30))),
    rec(0x03 | (1 << 2) | (1 << 5), ip(6, tcp(40000, 80, 19, 22, ACK, payload=b"y" * 31))),
    rec(0x03 | (4 << 2) | (3 << 5), ip(6, tcp(40000, 80, 80, 22, ACK | FIN))),
]
put("stack_input", "established_data_ooo_fin", b"".join(est))
put("stack_input", "new_syn_handshake", b"".join([
    rec(0x01, ip(6, tcp(41000, 80, 5000, 0, SYN, opts=SYN_OPTS))),
    rec(0x01 | (5 << 2), ip(6, tcp(41000, 80, 5001, 0, ACK, payload=b"z"))),
    rec(0x01 | (1 << 5), ip(6, tcp(41000, 80, 5001, 0, RST))),
]))
put("stack_input", "rst_in_window", rec(0x03, ip(6, tcp(40000, 80, 5, 0, RST))))
put("stack_input", "udp_dns_and_ping", b"".join([
    rec(0x01 | (7 << 5), ip(17, struct.pack(">HHHH", 5353, 53, 8 + 5, 0) + b"hello")),
    rec(0x01, ip(1, struct.pack(">BBHHH", 8, 0, 0, 1, 1) + b"ping")),
    rec(0x01, ip(6, tcp(42000, 81, 1, 0, SYN))),  # closed port: RST
]))
frag_payload = struct.pack(">HHHH", 5353, 53, 8 + 24, 0) + b"a" * 24
put("stack_input", "udp_fragments", b"".join([
    rec(0x01, ip(17, frag_payload[:16], 0x2000)),
    rec(0x01 | (1 << 2) | (7 << 5), ip(17, frag_payload[16:], 2)),
]))
put("stack_input", "timestamps_paws", b"".join([
    rec(0x03, ip(6, tcp(40000, 80, 1, 1, ACK, opts=TS_OPTS, payload=b"abc"))),
    rec(0x03 | (7 << 2), ip(6, tcp(40000, 80, 4, 1, ACK))),
]))

# ---- tcp_options: raw TCP segments (no IP header)
put("tcp_options", "syn_mss_sack_ts_ws", tcp(40000, 80, 1000, 0, SYN, opts=SYN_OPTS))
put("tcp_options", "ack_sack_blocks", tcp(40000, 80, 1, 1, ACK, opts=bytes([1, 1, 5, 34]) + struct.pack(">8I", *range(8)) + bytes([0, 0]), payload=b"data"))
put("tcp_options", "ts_and_sack", tcp(1, 2, 3, 4, ACK, opts=TS_OPTS + bytes([1, 1, 5, 18]) + struct.pack(">4I", 9, 10, 20, 30)))
put("tcp_options", "unknown_option_nop_eol", tcp(1, 2, 3, 4, ACK, opts=bytes([30, 4, 0, 0, 1, 0, 0, 0])))
put("tcp_options", "structured", bytes([0x12, 0xff]) + bytes(range(46)) + b"payload")

# ---- assembler: [limit] then 5-byte ops [op][a lo hi][b lo hi]
def op(k, a, b):
    return bytes([k]) + struct.pack("<HH", a, b)
put("assembler", "holes_then_fill", bytes([3]) + op(0, 10, 5) + op(0, 30, 5) + op(0, 50, 5) + op(0, 70, 5) + op(0, 0, 10) + op(3, 0, 0) + op(2, 3, 0) + op(0, 0, 100) + op(3, 0, 0))
put("assembler", "overlap_merge", bytes([7]) + op(0, 5, 10) + op(1, 3, 4) + op(0, 14, 6) + op(2, 8, 0) + op(0, 0, 1) + op(3, 0, 0))

# ---- kv_frame: Frame = magic "KV" version 1, kind, sender, lamport, event, vclock len, vclock, body
def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def vclock(entries):
    out = varint(len(entries))
    prev = None
    for node, c in entries:
        out += varint(node if prev is None else node - prev - 1) + varint(c)
        prev = node
    return out
def frame(kind, sender, lamport, event, vc, body):
    return b"KV" + bytes([1, kind]) + struct.pack(">QQQH", sender, lamport, event, len(vc)) + vc + body
hb = frame(0, 2, 7, 3, vclock([(1, 4), (2, 9), (5, 1)]), b"")
raft = frame(1, 3, 11, 0, vclock([]), bytes([0x08, 0x03, 0x10, 0x01, 0x18, 0x03]))
put("kv_frame", "heartbeat_frame", hb)
put("kv_frame", "raft_frame", raft)
put("kv_frame", "vclock_only", vclock([(0, 1), (1, 2), (300, 70000)]))
put("kv_frame", "length_prefixed_stream", bytes([10]) + b"".join(struct.pack(">I", len(f)) + f for f in (hb, raft)))

# ---- http_request
put("http_request", "get_keepalive_pipelined", b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
put("http_request", "post_content_length", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n")
put("http_request", "post_chunked_expect", b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n")
put("http_request", "http10_bad_version", b"GET / HTTP/1.0\r\n\r\nGET / HTTP/2.0\r\n\r\n")
put("http_request", "smuggling_te_cl", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

# ---- dns_message
def name(n):
    out = b""
    for l in n.strip(".").split("."):
        if l:
            out += bytes([len(l)]) + l.encode()
    return out + b"\0"
def rr(owner, ty, rdata, ttl=3600):
    return name(owner) + struct.pack(">HHIH", ty, 1, ttl, len(rdata)) + rdata
def msg(id, flags, qs, an=(), ns=(), ad=()):
    h = struct.pack(">HHHHHH", id, flags, len(qs), len(an), len(ns), len(ad))
    body = b"".join(name(q) + struct.pack(">HH", t, 1) for q, t in qs)
    return h + body + b"".join(an) + b"".join(ns) + b"".join(ad)
A, NS, CNAME, SOA, AAAA = 1, 2, 5, 6, 28
RESP = 0x8000
referral_com = msg(1, RESP, [("com.", A)], ns=[rr("com.", NS, name("a.gtld-servers.net."))],
                   ad=[rr("a.gtld-servers.net.", A, bytes([192, 5, 6, 30]))])
referral_ex = msg(1, RESP, [("example.com.", A)], ns=[rr("example.com.", NS, name("ns1.example.com."))],
                  ad=[rr("ns1.example.com.", A, bytes([192, 0, 2, 53]))])
answer = msg(1, RESP | 0x0400, [("www.example.com.", A)],
             an=[rr("www.example.com.", CNAME, name("web.example.com.")), rr("web.example.com.", A, bytes([192, 0, 2, 80]))])
soa = name("ns1.example.com.") + name("admin.example.com.") + struct.pack(">IIIII", 1, 2, 3, 4, 300)
nx = msg(1, RESP | 0x0400 | 3, [("www.example.com.", A)], ns=[rr("example.com.", SOA, soa)])
tc = msg(1, RESP | 0x0200, [("www.example.com.", A)])
query = msg(0x1234, 0x0100, [("www.example.org.", A)], ad=[b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)])
put("dns_message", "referrals_then_cname_answer", rec(1, referral_com) + rec(1, referral_ex) + rec(1, answer))
put("dns_message", "referrals_then_nxdomain", rec(1, referral_com) + rec(1, referral_ex) + rec(1, nx))
put("dns_message", "truncated_then_tcp", rec(1, referral_com) + rec(1, referral_ex) + rec(1, tc) + rec(1, answer))
put("dns_message", "timeout_spoof_query", rec(2, query) + rec(4 | 1, answer) + rec(0, query))

# ---- kv_node: ops for fuzz_targets/kv_node.rs. Op byte % 8: 0 time passes [ms/20 - 1];
# 1 raw frame [len][bytes]; 2-4 raft message from peer [2,3,4,2][op >> 6]:
# [type][term][log_term][index][commit][flags][entries n]{[kind][how][data sel]...}[snapshot];
# 6 client request [key][op][value / consistency][client].
def kv_msg(op, ty, term, log_term, index, commit, entries=b"", n=0, flags=0, snap=b""):
    return bytes([op, ty, term, log_term, index, commit, flags, n]) + entries + snap
put_normal = bytes([0, 0, 0, 1, 0, 1, 7])          # EntryNormal, next index, term = m.term, Put
conf_add = bytes([2, 0, 0, 4, 0])                   # EntryConfChange, AddNode 4
votes = (bytes([0, 255]) + kv_msg(2, 18, 1, 0, 0, 0) + kv_msg(0x42, 18, 1, 0, 0, 0)
         + bytes([0, 10]) + kv_msg(2, 6, 1, 0, 0, 0) + kv_msg(0x42, 6, 1, 0, 0, 0))
put("kv_node", "election_won", votes + bytes([6, 1, 0, 9, 1, 0, 5]))
put("kv_node", "follower_appends_and_commits",
    kv_msg(2, 3, 2, 0, 0, 2, put_normal * 2, 2) + kv_msg(2, 8, 2, 0, 0, 2) + bytes([0, 3]) +
    kv_msg(2, 3, 2, 2, 2, 4, put_normal + conf_add, 2) + bytes([6, 2, 2, 0, 3]))
put("kv_node", "snapshot_install",
    kv_msg(2, 7, 3, 0, 0, 0, snap=bytes([9, 3, 0b111, 0, 0])) + bytes([0, 1, 6, 1, 2, 1, 1]))
put("kv_node", "raw_and_heartbeats", bytes([1, 4]) + b"KV\x01\x02" + bytes([7, 0, 0, 0, 5]))
