//! Small standard services that `tunstack up` runs on the stack, useful for
//! testing from the kernel side: echo (RFC 862, TCP and UDP port 7),
//! discard (RFC 863, TCP port 9) and chargen (RFC 864, TCP port 19).
//! Each connection gets a thread; these are test services, not a web server.

use crate::runtime::{Net, TcpListener, TcpStream, UdpSocket};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::thread::JoinHandle;

pub const ECHO_PORT: u16 = 7;
pub const DISCARD_PORT: u16 = 9;
pub const CHARGEN_PORT: u16 = 19;

/// Spawn a thread that accepts on `listener` forever and runs `serve` on a
/// new thread per connection. Ends when the stack stops.
pub fn spawn_server(
    name: &str,
    listener: TcpListener,
    serve: fn(TcpStream) -> io::Result<()>,
) -> io::Result<JoinHandle<()>> {
    let tname = name.to_string();
    std::thread::Builder::new()
        .name(format!("{tname}-accept"))
        .spawn(move || loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    log::debug!("{tname}: connection from {peer}");
                    let n = tname.clone();
                    let spawned =
                        std::thread::Builder::new()
                            .name(tname.clone())
                            .spawn(move || {
                                if let Err(e) = serve(stream) {
                                    log::debug!("{n}: connection from {peer} ended: {e}");
                                }
                            });
                    if let Err(e) = spawned {
                        log::warn!("{tname}: cannot spawn a connection thread: {e}");
                    }
                }
                Err(e) => {
                    log::debug!("{tname}: accept stopped: {e}");
                    return;
                }
            }
        })
}

/// Echo: write back everything read; half-close when the peer does.
pub fn echo(stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&stream).read(&mut buf)?;
        if n == 0 {
            stream.shutdown(Shutdown::Write)?;
            return Ok(());
        }
        (&stream).write_all(&buf[..n])?;
    }
}

/// Discard: read and drop everything; close once the peer half-closes and
/// every byte has been read.
pub fn discard(stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while (&stream).read(&mut buf)? > 0 {}
    stream.shutdown(Shutdown::Write)
}

/// The RFC 864 pattern: lines of 72 printable characters, each starting one
/// character later in the 95-character cycle.
pub fn chargen_pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 74);
    let mut line = 0usize;
    while out.len() < len {
        for i in 0..72 {
            out.push(b' ' + ((line + i) % 95) as u8);
        }
        out.extend_from_slice(b"\r\n");
        line += 1;
    }
    out.truncate(len);
    out
}

/// Chargen: send the pattern until the peer closes or resets.
pub fn chargen(stream: TcpStream) -> io::Result<()> {
    // 95 lines of 74 bytes repeat exactly, so one block can be sent forever.
    let block = chargen_pattern(95 * 74);
    loop {
        (&stream).write_all(&block)?;
    }
}

/// UDP echo: send every datagram back to its source.
pub fn spawn_udp_echo(sock: UdpSocket) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("udp-echo".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if let Err(e) = sock.send_to(&buf[..n], from) {
                            log::debug!("udp echo to {from}: {e}");
                        }
                    }
                    Err(e) => {
                        log::debug!("udp echo stopped: {e}");
                        return;
                    }
                }
            }
        })
}

/// Start echo (TCP+UDP 7), discard (9) and chargen (19) on `net`.
pub fn start_standard(net: &Net) -> io::Result<()> {
    spawn_server("echo", TcpListener::bind(net, ECHO_PORT)?, echo)?;
    spawn_server("discard", TcpListener::bind(net, DISCARD_PORT)?, discard)?;
    spawn_server("chargen", TcpListener::bind(net, CHARGEN_PORT)?, chargen)?;
    spawn_udp_echo(UdpSocket::bind(net, ECHO_PORT)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc864_chargen_lines_rotate_and_repeat() {
        let p = chargen_pattern(95 * 74 * 2);
        assert_eq!(&p[..3], b" !\"");
        assert_eq!(&p[72..74], b"\r\n");
        assert_eq!(p[74], b'!', "second line starts one character later");
        assert_eq!(
            &p[..95 * 74],
            &p[95 * 74..],
            "the pattern repeats every 95 lines"
        );
        assert!(p
            .iter()
            .all(|&c| (32..127).contains(&c) || c == b'\r' || c == b'\n'));
    }
}
