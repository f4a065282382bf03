#!/usr/bin/env bash
# The main demo: builds tunstack, brings a stack up on a TUN device inside a
# private network namespace, and shows the kernel talking to it: ping, TCP
# echo, UDP echo, a 100 MB transfer into the stack's discard service, the
# kernel's curl against the stack's HTTP and HTTPS servers, the stack itself
# fetching from a server on the kernel side (`tunstack curl`), and the first
# packets of the pcap trace, then a three-node Raft KV cluster over the stack
# (reads at each consistency level, a leader killed, a partition, and the
# space-time diagram written to /tmp/tunstack-kv-trace.{svg,html}). Nothing leaves the namespace; it vanishes when
# the demo ends. At the end it prints the commands to try it yourself.
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
RUST_LOG=info "$bin" up --state-dir "$work/state" --pcap "$work/demo.pcap" > "$work/up.log" 2>&1 &
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

step "the kernel's curl fetches http://$stack/ (the status page, from the stack's HTTP server)"
curl -sS --noproxy '*' --max-time 10 http://$stack/ | head -n 8

step "the kernel's curl fetches https://$stack/ (TLS by the stack, CA from its banner)"
curl -sS --noproxy '*' --max-time 10 --cacert "$work/state/ca.pem" -w 'HTTP %{http_code}, %{size_download} bytes, TLS verified by ca.pem\n' -o /dev/null https://$stack/
echo "10 MB over HTTPS, checked by sha256:"
# The /bytes/N pattern (src/http/mod.rs pattern_byte), computed independently.
want=$(python3 -c 'import hashlib
n = 10 * 1024 * 1024
p = bytes(10 if i % 64 == 63 else 97 + (i // 64 + i % 64) % 26 for i in range(1664))
print(hashlib.sha256((p * (n // 1664 + 1))[:n]).hexdigest())')
start=$(date +%s%N)
got=$(curl -sS --noproxy '*' --max-time 60 --cacert "$work/state/ca.pem" https://$stack/bytes/10485760 | sha256sum | cut -d' ' -f1)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "  sha256 $got in $ms ms"
if [ "$got" = "$want" ]; then echo "  matches the /bytes/N pattern"; else echo "  MISMATCH (want $want)"; exit 1; fi

step "the stack as client: tunstack curl (its own stack on tunstack1) fetches from python's http.server"
mkdir -p "$work/www" && echo "hello from the kernel's web server" > "$work/www/hello.txt"
python3 -m http.server 8000 --bind 198.19.0.1 --directory "$work/www" >/dev/null 2>&1 &
py=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/198.19.0.1/8000) 2>/dev/null && break; sleep 0.1; done
"$bin" curl -v http://198.19.0.1:8000/hello.txt 2>&1 | grep -E '^\* (Stack|Through)|hello'
kill $py

step "DNS: a private hierarchy (NSD: root, test., example., ...) in this namespace; tunstack dig resolves through its own stack"
scripts/dns-hierarchy.sh start "$work/dns" --base 198.18.53 --no-unbound | tail -n 1
hints=$work/dns/fix/root.hints
"$bin" dig --root-hints "$hints" www.alpha.test +trace
"$bin" dig --root-hints "$hints" chain.alpha.test A | grep -A4 'ANSWER SECTION'
echo "the kernel's dig asks the stack's recursive server (tunstack up --dns on tunstack3, 198.19.3.2):"
"$bin" up --tun tunstack3 --addr 198.19.3.2 --peer 198.19.3.1/24 --dns --root-hints "$hints" --state-dir "$work/state3" > "$work/dns.log" 2>&1 &
dnspid=$!
for _ in $(seq 100); do grep -q "Ctrl-C stops" "$work/dns.log" 2>/dev/null && break; sleep 0.1; done
dig @198.19.3.2 host.gamma.test +short
dig @198.19.3.2 +norecurse host.gamma.test | grep -E 'status|ANSWER SECTION|^host'
kill -TERM $dnspid; wait $dnspid || true
grep '^dns:' "$work/dns.log" || true
scripts/dns-hierarchy.sh stop "$work/dns"

step "KV: a three-node Raft cluster; each node its own process with its own stack on its own TUN (tskv1-3); peer links are mutual TLS on the stacks"
export TUNSTACK_KV_DIR="$work/kv"
"$bin" kv cluster --nodes 3 --dir "$work/kv" > "$work/kv.log" 2>&1 &
kvpid=$!
for _ in $(seq 300); do grep -q "Ctrl-C stops" "$work/kv.log" 2>/dev/null && break; sleep 0.1; done
cat "$work/kv.log"
kv_leader() {
  for _ in $(seq 100); do
    l=$(curl -s -m 1 http://198.19.101.2/status http://198.19.102.2/status http://198.19.103.2/status 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin.read().replace("}{","}\n{").splitlines():
    s=json.loads(line)
    if s.get("role")=="leader": print(s["id"]); break' 2>/dev/null || true)
    [ -n "$l" ] && { echo "$l"; return; }
    sleep 0.1
  done
}
leader=$(kv_leader)
[ -n "$leader" ] || { echo "no KV leader elected"; cat "$work/kv.log"; exit 1; }
echo "leader: node $leader"
"$bin" kv put greeting "hello from the demo"
for level in linearizable sequential eventual; do
  echo "-- get at $level consistency:"; "$bin" kv get greeting --consistency $level
done
"$bin" kv cas greeting "hello from the demo" "compare-and-swapped"
echo "-- the kernel's curl reaches a node's HTTP API on its stack:"
curl -s 'http://198.19.102.2/kv/greeting?consistency=eventual'; echo
"$bin" kv status
follower=$(( leader % 3 + 1 ))
echo "-- PACELC's latency side: 200 reads per level with curl (keep-alive), from the leader (node $leader) and a follower (node $follower):"
for level in linearizable sequential eventual; do
  for who in "leader $leader" "follower $follower"; do
    read -r role id <<< "$who"
    url="http://198.19.10$id.2/kv/greeting?consistency=$level"
    urls=(); for _ in $(seq 200); do urls+=(-o /dev/null "$url"); done
    curl -s -w '%{time_total}\n' "${urls[@]}" | sort -n \
      | awk -v l="$level" -v w="$role" '{ v[NR] = $1 * 1e6 } END { printf "   %-12s from the %-8s p50 %5.0f us  p99 %5.0f us\n", l, w, v[int(NR*0.5)], v[int(NR*0.99)] }'
  done
done

step "KV: SIGKILL the leader (node $leader); a new leader serves the next write"
"$bin" kv kill "$leader"
t0=$(date +%s%N)
"$bin" kv put after-failover "written while node $leader is dead"
t1=$(date +%s%N)
echo "first write after the kill answered in $(( (t1 - t0) / 1000000 )) ms (election timeout 500-750 ms)"
"$bin" kv status || true
"$bin" kv restart "$leader"
sleep 2
echo "-- node $leader restarted and caught up (eventual read from it):"
"$bin" kv get after-failover --consistency eventual --node "198.19.10$leader.2:80" || true

step "KV: CAP shown: partition node $leader away; the majority serves, the minority refuses linearizable reads but serves eventual ones"
"$bin" kv partition "$leader"
sleep 1
"$bin" kv put during-partition "majority only"
echo "-- linearizable read on the cut-off node (refused):"
"$bin" kv get during-partition --consistency linearizable --node "198.19.10$leader.2:80" || true
echo "-- eventual read on the cut-off node (stale: it has not seen the write):"
"$bin" kv get during-partition --consistency eventual --node "198.19.10$leader.2:80" || true
"$bin" kv heal
t0=$(date +%s%N)
for _ in $(seq 150); do
  "$bin" kv get during-partition --consistency eventual --node "198.19.10$leader.2:80" 2>/dev/null | grep -q "majority only" && break
  sleep 0.1
done
t1=$(date +%s%N)
echo "-- after heal, the same node (caught up $(( (t1 - t0) / 1000000 )) ms after the heal):"
"$bin" kv get during-partition --consistency eventual --node "198.19.10$leader.2:80" || true

step "KV: the space-time diagram of what happened (Lamport + vector clocks, an arrow per message)"
"$bin" kv trace --out /tmp/tunstack-kv-trace.html
"$bin" kv trace --out /tmp/tunstack-kv-trace.svg
kill -INT $kvpid; wait $kvpid || true

step "stopping (SIGTERM) and the stack's counters"
kill -TERM $pid; wait $pid || true
tail -n 2 "$work/up.log"
ip link show dev tunstack0 >/dev/null 2>&1 && echo "device still present?!" || echo "tunstack0 removed"

step "the first packets of the trace (tcpdump -r demo.pcap)"
tcpdump -n -r "$work/demo.pcap" -c 12 2>/dev/null
INNER

cat <<EOF

== Try it yourself (as root, or after sudo ./setup-tun.sh for an unprivileged user)
  # terminal 1: bring the stack up (HTTP on :80, HTTPS on :443; prints its CA path)
  $bin up --state-dir /tmp/tunstack-state
  # terminal 2: the kernel talks to the stack
  curl http://198.19.0.2/
  curl --cacert /tmp/tunstack-state/ca.pem https://198.19.0.2/
  curl --cacert /tmp/tunstack-state/ca.pem -o /dev/null -w '%{speed_download} B/s\n' https://198.19.0.2/bytes/10000000
  openssl s_client -connect 198.19.0.2:443 -CAfile /tmp/tunstack-state/ca.pem -tls1_3 </dev/null
  # the stack as client (a second stack on tunstack1; with ip_forward=1 it reaches the first)
  $bin curl -v --cacert /tmp/tunstack-state/ca.pem https://198.19.0.2/status
  # reach the wider network from the stack: sudo ./setup-tun.sh --nat --tun tunstack1 --peer 198.19.1.1/24
EOF
