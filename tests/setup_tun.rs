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

/// `--nat` in a private network namespace (the "machine") whose default
/// route leads over a veth pair into a second namespace the scenario made
/// (the "wider network", with a server on 192.0.2.80 and no route back to
/// the stack's subnet). Only the masquerade makes the stack's connection
/// work; `--down --nat` removes exactly what `--nat` added.
const NAT_SCENARIO: &str = r#"
set -euo pipefail
script=$1 bin=$2 dir=$3
export TUNSTACK_NAT_STATE=$dir/nat-state
ip link set lo up
unshare --net sleep 600 & wpid=$!
trap 'kill $wpid 2>/dev/null || true; kill $py 2>/dev/null || true' EXIT
py=
for _ in $(seq 100); do [ "$(readlink /proc/$wpid/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break; sleep 0.05; done
W="nsenter --net=/proc/$wpid/ns/net"
ip link add tsnat0 type veth peer name tsnat1
ip link set tsnat1 netns $wpid
ip addr add 203.0.113.1/24 dev tsnat0
ip link set tsnat0 up
ip route add default via 203.0.113.2 dev tsnat0
$W ip link set lo up
$W ip addr add 203.0.113.2/24 dev tsnat1
$W ip link set tsnat1 up
$W ip addr add 192.0.2.80/32 dev lo
$W python3 -m http.server 8080 --bind 192.0.2.80 --directory "$dir/www" >/dev/null 2>&1 & py=$!
for _ in $(seq 100); do $W bash -c 'exec 3<>/dev/tcp/192.0.2.80/8080' 2>/dev/null && break; sleep 0.1; done
echo "FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)"
if "$bin" curl --connect-timeout 3 http://192.0.2.80:8080/blob >/dev/null 2>"$dir/err"; then echo "BEFORE_NAT=ok"; else echo "BEFORE_NAT=failed"; fi
"$script" --nat --tun tunstack1 --peer 198.19.1.1/24
echo "FORWARD_NAT=$(cat /proc/sys/net/ipv4/ip_forward)"
nft list ruleset
"$bin" curl http://192.0.2.80:8080/blob > "$dir/got"
echo "GOT=$(sha256sum < "$dir/got" | cut -d' ' -f1)"
echo "WANT=$(sha256sum < "$dir/www/blob" | cut -d' ' -f1)"
if "$script" --nat --tun tunstack1 --peer 198.19.1.1/24 2>"$dir/err"; then echo "SECOND=ok"; else echo "SECOND=refused"; fi
"$script" --down --nat --tun tunstack1
echo "FORWARD_AFTER=$(cat /proc/sys/net/ipv4/ip_forward)"
echo "RULESET_AFTER=[$(nft list ruleset)]"
if "$bin" curl --connect-timeout 3 http://192.0.2.80:8080/blob >/dev/null 2>"$dir/err"; then echo "AFTER_DOWN=ok"; else echo "AFTER_DOWN=failed"; fi
"$script" --down --nat --tun tunstack1
"#;

#[test]
fn setup_tun_nat_lets_the_stack_reach_a_wider_network_and_down_removes_it() {
    if !netns::require_root("setup_tun_nat") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("setup-tun.sh");
    let dir = std::env::temp_dir().join(format!("tunstack-nat-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let blob: Vec<u8> = (0..2_000_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("www/blob"), &blob).unwrap();
    let out = Command::new("unshare")
        .args(["--net", "bash", "-c", NAT_SCENARIO, "scenario"])
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_tunstack"))
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
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    assert_eq!(value("FORWARD_BEFORE"), "0", "{text}");
    assert_eq!(value("BEFORE_NAT"), "failed", "{text}");
    assert_eq!(value("FORWARD_NAT"), "1", "{text}");
    assert!(text.contains("enabled IPv4 forwarding"), "{text}");
    assert!(
        text.contains("masquerade 198.19.1.0/24 out of tsnat0"),
        "found the default route's interface: {text}"
    );
    assert!(text.contains("masquerade"), "{text}");
    assert_eq!(value("GOT"), value("WANT"), "{text}");
    assert_eq!(value("SECOND"), "refused", "{text}");
    assert!(text.contains("removed nftables table"), "{text}");
    assert_eq!(value("FORWARD_AFTER"), "0", "{text}");
    assert_eq!(value("RULESET_AFTER"), "[]", "{text}");
    assert_eq!(value("AFTER_DOWN"), "failed", "{text}");
    assert!(text.contains("no NAT set up for tunstack1"), "{text}");
}
