//! DNS messages from the network into the recursive resolver
//! (`Resolution::handle_response`, driven through referrals, CNAMEs, TC
//! fallback and timeouts) and into the DNS server's request handling
//! (`dns::server::respond`, over UDP and TCP). It must never panic.
//!
//! Input: records of `[ctl][len_hi][len_lo][len bytes of DNS message]`. Each
//! record is the answer to the resolver's current query. `ctl` bit 0: make it
//! match the query (its ID, QR=1, opcode QUERY and the question, exactly as
//! sent) so the fuzzer reaches the referral/answer logic; bit 1: let the query
//! time out first; bit 2: deliver it from another port (a spoof, dropped).
//! Every record is also handed to the DNS server as a request.
#![no_main]

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};
use tunstack::dns::cache::{Cache, CacheConfig};
use tunstack::dns::hints::RootHints;
use tunstack::dns::resolver::{Answer, Context, Resolution, ResolverConfig};
use tunstack::dns::server::respond;
use tunstack::dns::servers::{ServerConfig, ServerTable};
use tunstack::rng::Rng;
use tunstack::time::{Duration, Instant};

fn context() -> Context {
    Context::new(
        RootHints::parse(". NS a.root-servers.net.\na.root-servers.net. A 198.41.0.4\n")
            .expect("hints"),
        ResolverConfig::default(),
        Cache::new(CacheConfig::default()),
        ServerTable::new(ServerConfig::default()),
        Rng::new(1),
    )
}

/// Rewrite `bytes` as the answer to `query` if both parse.
fn matched(bytes: &[u8], query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::from_vec(bytes).ok()?;
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query);
    m.take_queries();
    m.add_queries(q.queries().iter().cloned());
    m.to_vec().ok()
}

fn server_answer(name: &Name, ty: RecordType, _rd: bool) -> Answer {
    let mut answers = Vec::new();
    if ty == RecordType::A {
        for i in 0..40u8 {
            answers.push(Record::from_rdata(
                name.clone(),
                300,
                RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
            ));
        }
    }
    Answer {
        rcode: hickory_proto::op::ResponseCode::NoError,
        answers,
        authority: Vec::new(),
        additional: Vec::new(),
        from_cache: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ctx = context();
    let mut now = Instant::from_secs(100);
    let name = Name::from_ascii("www.example.com.").expect("name");
    let mut res = Resolution::new(&name, RecordType::A, &mut ctx, now);
    let mut rest = data;
    while rest.len() >= 3 {
        let ctl = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let msg = &rest[3..3 + len];
        rest = &rest[3 + len..];
        for udp in [true, false] {
            if let Some(out) = respond(msg, udp, server_answer) {
                assert!(!udp || out.len() <= 1232, "UDP answer over the limit");
            }
        }
        let Some(q) = res.poll_transmit(&mut ctx, now) else {
            if res.result().is_some() {
                // Start another resolution with the warm cache.
                res = Resolution::new(&name, RecordType::AAAA, &mut ctx, now);
            }
            continue;
        };
        if ctl & 2 != 0 {
            now = res.poll_at().unwrap_or(now).max(now);
            res.handle_timeout(&mut ctx, now);
            continue;
        }
        let bytes = if ctl & 1 != 0 {
            matched(msg, &q.bytes).unwrap_or_else(|| msg.to_vec())
        } else {
            msg.to_vec()
        };
        let from = if ctl & 4 != 0 {
            SocketAddr::new(q.server.ip(), q.server.port().wrapping_add(1))
        } else {
            q.server
        };
        now += Duration::from_millis(3);
        res.handle_response(&mut ctx, from, &bytes, now);
    }
});
