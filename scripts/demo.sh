#!/usr/bin/env bash
# The main demo: builds tunstack, brings a stack up on a TUN device inside a
# private network namespace, and shows the kernel talking to it: ping, TCP
# echo, UDP echo, a 100 MB transfer into the stack's discard service, and the
# first packets of the pcap trace. Nothing leaves the namespace; it vanishes
# when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "demo.sh: run as root (it creates a network namespace and a TUN device)" >&2; exit 1; }
  exec sudo env "PATH=$PATH" "$0" "$@"
fi
scripts/install-deps.sh
cargo build --release --bin tunstack
bin=$PWD/target/release/tunstack
work=$(mktemp -d /tmp/tunstack-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Everything below runs in a new network namespace (unshare --net).
unshare --net bash -s "$bin" "$work" <<'INNER'
set -euo pipefail
bin=$1 work=$2
ip link set lo up
stack=198.19.0.2
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "tunstack up (in a private network namespace)"
RUST_LOG=info "$bin" up --pcap "$work/demo.pcap" > "$work/up.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "Ctrl-C stops" "$work/up.log" 2>/dev/null && break; sleep 0.1; done
cat "$work/up.log"
kill -0 $pid 2>/dev/null || { echo "tunstack up failed"; exit 1; }
ip -brief addr show dev tunstack0

step "the kernel pings the stack"
ping -c 3 -i 0.2 $stack

step "TCP echo (port 7)"
exec 3<>/dev/tcp/$stack/7
printf 'hello from the kernel\n' >&3
read -r -t 5 reply <&3
echo "sent 'hello from the kernel', got back '$reply'"
exec 3>&-

step "UDP echo (port 7)"
exec 4<>/dev/udp/$stack/7
printf 'a datagram' >&4
read -r -t 5 -N 10 reply <&4 || true
echo "got back '$reply'"
exec 4>&-

step "100 MB from the kernel's TCP into the stack's discard service (port 9)"
dd if=/dev/zero bs=1M count=100 status=none | (time cat > /dev/tcp/$stack/9) 2>&1 | grep real

step "stopping (SIGTERM) and the stack's counters"
kill -TERM $pid; wait $pid || true
tail -n 2 "$work/up.log"
ip link show dev tunstack0 >/dev/null 2>&1 && echo "device still present?!" || echo "tunstack0 removed"

step "the first packets of the trace (tcpdump -r demo.pcap)"
tcpdump -n -r "$work/demo.pcap" -c 12 2>/dev/null
INNER
