//! setup-tun.sh end to end, in a private network and mount namespace: it
//! creates a persistent TUN device owned by an unprivileged user, `tunstack
//! up` run as that user attaches to it and answers pings, stopping the stack
//! leaves the device in place, and `--down` removes it.
//!
//! /dev/net/tun is replaced (inside the private mount namespace only) by a
//! copy of the node with mode 0600, as some images ship it, so the script's
//! permission fix is exercised without touching the host's node.

use std::path::Path;
use std::process::Command;
use tunstack::netns;

const SCENARIO: &str = r#"
set -euo pipefail
script=$1 bin=$2 tun=$3 dir=$4
mount --make-rprivate /
mknod "$dir/tun" c 10 200
chmod 0600 "$dir/tun"
mount --bind "$dir/tun" /dev/net/tun
ip link set lo up
"$script" --user nobody --tun "$tun" --peer 198.19.7.1/24
echo "EXISTS=$(ip link show dev "$tun" >/dev/null 2>&1 && echo yes || echo no)"
if "$script" --user nobody --tun "$tun" 2>"$dir/err"; then echo "SECOND=ok"; else echo "SECOND=refused"; fi
cat "$dir/err"
setpriv --reuid nobody --regid nogroup --clear-groups "$bin" up --tun "$tun" --addr 198.19.7.2 --peer 198.19.7.1/24 >"$dir/up.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "Ctrl-C stops" "$dir/up.log" && break; sleep 0.1; done
cat "$dir/up.log"; : > "$dir/up.log"
ping -c 2 -i 0.2 -W 2 198.19.7.2 >/dev/null && echo "PING=ok" || echo "PING=failed"
kill -TERM $pid
wait $pid && echo "EXIT=ok" || echo "EXIT=failed"; cat "$dir/up.log"
echo "AFTER_STOP=$(ip link show dev "$tun" >/dev/null 2>&1 && echo yes || echo no)"
"$script" --down --tun "$tun"
echo "AFTER_DOWN=$(ip link show dev "$tun" >/dev/null 2>&1 && echo yes || echo no)"
if "$script" --peer not-an-address 2>"$dir/err"; then echo "BADPEER=accepted"; else echo "BADPEER=refused"; fi
cat "$dir/err"
"#;

#[test]
fn setup_tun_creates_a_device_an_unprivileged_user_runs_the_stack_on() {
    if !netns::require_root("setup_tun") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("setup-tun.sh");
    let dir = std::env::temp_dir().join(format!("tunstack-setup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tun = format!("tsu{}", std::process::id() % 100_000);
    let out = Command::new("unshare")
        .args(["--net", "--mount", "bash", "-c", SCENARIO, "scenario"])
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_tunstack"))
        .arg(&tun)
        .arg(&dir)
        .output()
        .expect("run unshare (util-linux)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scenario failed:\n{text}");
    for want in [
        "made /dev/net/tun usable by nobody",
        "created persistent TUN device",
        "EXISTS=yes",
        "SECOND=refused",
        "--down",
        "(attached)",
        "PING=ok",
        "EXIT=ok",
        "stopping:",
        "AFTER_STOP=yes",
        "removed TUN device",
        "AFTER_DOWN=no",
        "BADPEER=refused",
        "KERNEL_IP/PREFIX",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
