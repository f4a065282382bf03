//! The HTTP/1.1 server's handling of one connection's bytes: reading request
//! heads (size limit), parsing them (httparse plus the server's own checks),
//! Content-Length and chunked bodies, Expect, keep-alive and pipelining.
//! The handler reads the whole body. It must never panic, and every request
//! gets a response that starts with a status line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{self, Read};
use tunstack::http::server::{fuzz_connection, Limits, Request, Response};

fn handler(req: &Request, body: &mut dyn Read) -> io::Result<Response> {
    let mut n = 0u64;
    let mut buf = [0u8; 4096];
    loop {
        match body.read(&mut buf)? {
            0 => break,
            k => n += k as u64,
        }
    }
    let _ = (req.header("Host"), req.is_head());
    Ok(Response::text(
        200,
        format!("{} {} {n}\n", req.method, req.path),
    ))
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_body: 64 * 1024,
        max_header_bytes: 8 * 1024,
        ..Limits::default()
    };
    let out = fuzz_connection(data, &handler, limits);
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1."),
        "not an HTTP response"
    );
});
