#!/usr/bin/env bash
# Start or stop the private DNS hierarchy of tests/dns_fixtures: one NSD per
# nameserver address (127.0.0.2-6, see servers.txt) and an Unbound recursive
# resolver on 127.0.0.53 pointed at the private root. Everything runs in the
# caller's network namespace: call it from inside one the test created
# (unshare --net, tunstack::netns), with lo up. Nothing here reaches the real
# root servers or any address outside 127.0.0.0/8.
#
# --base A.B.C moves the whole hierarchy from 127.0.0.x to A.B.C.x: the
# fixtures are copied to RUNDIR/fix with every 127.0.0.x rewritten (zone
# glue, root hints, servers.txt, Unbound's interface), and the addresses are
# added as /32s to a dummy device "dnsfix0" (created here; lo when the kernel
# has no dummy driver). A stack on a TUN
# device reaches those, while the kernel never routes from a TUN to
# 127.0.0.0/8. Then root is A.B.C.2, Unbound A.B.C.53, and the root hints
# file RUNDIR/fix/root.hints.
#
# --proxied "T1 T2 ..." moves the NSD of addresses BASE.T1, BASE.T2, ... to
# port 5300, leaving BASE.Tn:53 free for a test's own front end (the spoofing
# test puts a forging proxy there that relays to port 5300).
#
#   scripts/dns-hierarchy.sh start RUNDIR [--no-unbound] [--base A.B.C] [--proxied "T..."]
#   scripts/dns-hierarchy.sh stop RUNDIR
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
fix="$here/tests/dns_fixtures"
cmd=${1:-}
run=${2:-}
[ -n "$cmd" ] && [ -n "$run" ] || { echo "usage: $0 start|stop RUNDIR [--no-unbound] [--base A.B.C]" >&2; exit 2; }
shift 2 || true
unbound_on=yes
base=127.0.0
proxied=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-unbound) unbound_on=no ;;
    --base) base=${2:?--base needs A.B.C}; shift ;;
    --proxied) proxied=" ${2:?--proxied needs address tags} "; shift ;;
    *) echo "dns-hierarchy: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case "$base" in
  *[!0-9.]*|*..*|.*|*.) echo "dns-hierarchy: --base $base: expected A.B.C" >&2; exit 2 ;;
esac

# Running, not a zombie: a daemon's parent is init, and an init that reaps
# late (a container's or a sandbox's) leaves the exited server a zombie that
# `kill -0` still finds, so each stop waited its full 5 s.
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }     # the state follows the command name, which may hold spaces
  [ "${st%% *}" != Z ]
}

stop() {
  for pf in "$run"/*.pid; do
    [ -e "$pf" ] || continue
    pid=$(cat "$pf" 2>/dev/null || true)
    if [ -n "$pid" ] && alive "$pid"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
  done
}

wait_port() { # addr [port]: until something answers a DNS query there
  for _ in $(seq 100); do
    if dig +time=1 +tries=1 +norecurse -p "${2:-53}" "@$1" . SOA >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "dns-hierarchy: server on $1 did not come up; see $run/*.log" >&2
  return 1
}

case "$cmd" in
start)
  for p in nsd unbound dig; do
    command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || { echo "dns-hierarchy: $p missing; run scripts/install-deps.sh" >&2; exit 1; }
  done
  export PATH="$PATH:/usr/sbin"
  mkdir -p "$run"
  stop
  if [ "$base" != 127.0.0 ]; then
    rm -rf "$run/fix"; mkdir -p "$run/fix"
    for f in "$fix"/*; do
      sed -e 's|access-control: 127.0.0.0/8 allow|access-control: 0.0.0.0/0 allow|' \
          -e "s/127\.0\.0\./$base./g" "$f" > "$run/fix/$(basename "$f")"
    done
    fix="$run/fix"
    # A dummy device if the kernel has them, else lo (any address on lo
    # outside 127.0.0.0/8 is an ordinary local address, reachable from a TUN).
    dev=dnsfix0
    if ! ip link show "$dev" >/dev/null 2>&1 && ! ip link add "$dev" type dummy 2>/dev/null; then
      dev=lo
    fi
    ip link set "$dev" up
    for t in 2 3 4 5 6 53; do
      ip -4 addr show | grep -q "inet $base.$t/" || ip addr add "$base.$t/32" dev "$dev"
    done
  fi
  addrs=()
  while read -r addr zones; do
    case "$addr" in ''|\#*) continue ;; esac
    tag=${addr##*.}
    port=53
    case "$proxied" in *" $tag "*) port=5300 ;; esac
    conf="$run/nsd-$tag.conf"
    mkdir -p "$run/xfr-$tag"
    cat > "$conf" <<CONF
server:
    ip-address: $addr
    port: $port
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$fix"
    database: ""
    zonelistfile: "$run/zonelist-$tag"
    xfrdfile: "$run/xfrd-$tag.state"
    xfrdir: "$run/xfr-$tag"
    pidfile: "$run/nsd-$tag.pid"
    logfile: "$run/nsd-$tag.log"
    server-count: 1
    verbosity: 1
    hide-version: yes
    reuseport: no
    # No response rate limiting: benchmarks and tests ask the same
    # questions of one server hundreds of times a second from one address.
    rrl-ratelimit: 0
remote-control:
    control-enable: no
CONF
    for z in $zones; do
      f="$z"zone; [ "$z" = . ] && f=root.zone
      printf 'zone:\n    name: "%s"\n    zonefile: "%s"\n' "$z" "$fix/$f" >> "$conf"
    done
    nsd -c "$conf"
    addrs+=("$addr $port")
  done < "$fix/servers.txt"
  for a in "${addrs[@]}"; do wait_port $a; done
  if [ "$unbound_on" = yes ]; then
    sed -e "s|@RUN@|$run|g" -e "s|@FIX@|$fix|g" "$fix/unbound.conf.in" > "$run/unbound.conf"
    unbound -c "$run/unbound.conf"
    wait_port "$base.53"
  fi
  echo "dns-hierarchy: up (root $base.2, unbound $base.53, hints $fix/root.hints) in $run"
  ;;
stop)
  stop
  ;;
*)
  echo "usage: $0 start|stop RUNDIR [--no-unbound]" >&2; exit 2 ;;
esac
