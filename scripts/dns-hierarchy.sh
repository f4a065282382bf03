#!/usr/bin/env bash
# Start or stop the private DNS hierarchy of tests/dns_fixtures: one NSD per
# nameserver address (127.0.0.2-6, see servers.txt) and an Unbound recursive
# resolver on 127.0.0.53 pointed at the private root. Everything runs in the
# caller's network namespace: call it from inside one the test created
# (unshare --net, tunstack::netns), with lo up. Nothing here reaches the real
# root servers or any address outside 127.0.0.0/8.
#
#   scripts/dns-hierarchy.sh start RUNDIR [--no-unbound]
#   scripts/dns-hierarchy.sh stop RUNDIR
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
fix="$here/tests/dns_fixtures"
cmd=${1:-}
run=${2:-}
[ -n "$cmd" ] && [ -n "$run" ] || { echo "usage: $0 start|stop RUNDIR [--no-unbound]" >&2; exit 2; }

stop() {
  for pf in "$run"/*.pid; do
    [ -e "$pf" ] || continue
    pid=$(cat "$pf" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
  done
}

wait_port() { # addr: until something answers a DNS query there
  for _ in $(seq 100); do
    if dig +time=1 +tries=1 +norecurse -p 53 "@$1" . SOA >/dev/null 2>&1; then return 0; fi
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
  addrs=()
  while read -r addr zones; do
    case "$addr" in ''|\#*) continue ;; esac
    tag=${addr##*.}
    conf="$run/nsd-$tag.conf"
    mkdir -p "$run/xfr-$tag"
    cat > "$conf" <<CONF
server:
    ip-address: $addr
    port: 53
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
remote-control:
    control-enable: no
CONF
    for z in $zones; do
      f="$z"zone; [ "$z" = . ] && f=root.zone
      printf 'zone:\n    name: "%s"\n    zonefile: "%s"\n' "$z" "$fix/$f" >> "$conf"
    done
    nsd -c "$conf"
    addrs+=("$addr")
  done < "$fix/servers.txt"
  for a in "${addrs[@]}"; do wait_port "$a"; done
  if [ "${3:-}" != --no-unbound ]; then
    sed -e "s|@RUN@|$run|g" -e "s|@FIX@|$fix|g" "$fix/unbound.conf.in" > "$run/unbound.conf"
    unbound -c "$run/unbound.conf"
    wait_port 127.0.0.53
  fi
  echo "dns-hierarchy: up (root 127.0.0.2, unbound 127.0.0.53) in $run"
  ;;
stop)
  stop
  ;;
*)
  echo "usage: $0 start|stop RUNDIR [--no-unbound]" >&2; exit 2 ;;
esac
