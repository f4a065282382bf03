//! Helpers for the KV tests that drive real node processes: the `tunstack kv`
//! command and a node's `/status`.

use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tunstack::kv::client::http_call;

/// The tunstack binary the nodes and the CLI run from.
pub const EXE: &str = env!("CARGO_BIN_EXE_tunstack");

/// `tunstack kv ARGS --dir DIR`, which must succeed; its standard output.
pub fn kv_cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(EXE)
        .arg("kv")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run tunstack kv");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tunstack kv {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A node's `GET /status` as JSON, or `None` when it does not answer 200.
pub fn status(addr: SocketAddrV4) -> Option<serde_json::Value> {
    match http_call(addr, "GET", "/status", &[], None, Duration::from_secs(2)) {
        Ok((200, b)) => serde_json::from_slice(&b).ok(),
        _ => None,
    }
}
