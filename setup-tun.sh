#!/usr/bin/env bash
# Create (or remove) a persistent TUN device that a non-root user can run
# tunstack on, with the kernel-side address and route already in place.
#
#   sudo ./setup-tun.sh [--user USER] [--tun NAME] [--peer KERNEL_IP/PREFIX] [--mtu BYTES]
#   sudo ./setup-tun.sh --down [--tun NAME]
#   sudo ./setup-tun.sh --nat [--peer KERNEL_IP/PREFIX] [--nat-out IFACE]   (and --down --nat)
#
# Then, as USER:   tunstack up --tun NAME --addr STACK_IP --peer KERNEL_IP/PREFIX
# (tunstack attaches to the existing device and leaves it in place on exit).
# --nat lets the stack's subnet reach the wider network: IPv4 forwarding and
# an nftables masquerade out of the default route's interface (or IFACE);
# with --down it removes exactly what it added. --nat alone touches no device.
set -euo pipefail

tun=tunstack0
peer=198.19.0.1/24
mtu=1500
user=${SUDO_USER:-$(id -un)}
down=0
nat=0
nat_out=
peer_given=0
# Where --nat remembers what it changed, so that --down undoes exactly that.
nat_state_dir=${TUNSTACK_NAT_STATE:-/run/tunstack-nat}

die() { echo "setup-tun.sh: $*" >&2; exit 1; }
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tun) tun=${2:?--tun needs a device name}; shift 2 ;;
    --peer) peer=${2:?--peer needs KERNEL_IP/PREFIX}; peer_given=1; shift 2 ;;
    --nat) nat=1; shift ;;
    --nat-out) nat_out=${2:?--nat-out needs an interface name}; nat=1; shift 2 ;;
    --mtu) mtu=${2:?--mtu needs a number}; shift 2 ;;
    --user) user=${2:?--user needs a user name}; shift 2 ;;
    --down) down=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "setup-tun.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo $0 $*)"
command -v ip >/dev/null || die "the 'ip' command is missing: apt-get install iproute2"
[ ${#tun} -le 15 ] || die "--tun $tun: device names are at most 15 characters"

# The masquerade covers the subnet of --peer (198.19.0.1/24 -> 198.19.0.0/24;
# any host bits are cleared by nft's prefix match).
nat_table() { echo "tunstack_nat_${tun//[^a-zA-Z0-9_]/_}"; }

# 198.19.0.1/24 -> 198.19.0.0/24
network_of() {
  local ip=${1%/*} len=${1#*/} a b c d n mask
  IFS=. read -r a b c d <<< "$ip"
  n=$(( (a << 24) | (b << 16) | (c << 8) | d ))
  mask=$(( len == 0 ? 0 : (0xffffffff << (32 - len)) & 0xffffffff ))
  n=$(( n & mask ))
  echo "$(( n >> 24 & 255 )).$(( n >> 16 & 255 )).$(( n >> 8 & 255 )).$(( n & 255 ))/$len"
}

nat_up() {
  command -v nft >/dev/null || die "the 'nft' command is missing: apt-get install nftables"
  [[ "$peer" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$ ]] || die "--peer $peer is not KERNEL_IP/PREFIX (for example 198.19.0.1/24)"
  local table state out subnet fwd
  table=$(nat_table)
  state="$nat_state_dir/$table"
  [ -e "$state" ] && die "NAT for $tun is already set up (state in $state); remove it with: sudo $0 --down --nat --tun $tun"
  out=$nat_out
  if [ -z "$out" ]; then
    out=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
    [ -n "$out" ] || die "no IPv4 default route: name the outgoing interface with --nat-out IFACE"
  fi
  ip link show dev "$out" >/dev/null 2>&1 || die "--nat-out $out: no such interface"
  subnet=$(network_of "$peer")
  fwd=$(cat /proc/sys/net/ipv4/ip_forward)
  mkdir -p "$nat_state_dir"
  nft -f - <<NFT || die "nft could not add table ip $table"
table ip $table {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $subnet oifname "$out" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ip saddr $subnet oifname "$out" accept
    ip daddr $subnet iifname "$out" ct state established,related accept
  }
}
NFT
  printf 'table=%s\nout=%s\nsubnet=%s\nforward_before=%s\n' "$table" "$out" "$subnet" "$fwd" > "$state"
  echo 1 > /proc/sys/net/ipv4/ip_forward
  if [ "$fwd" = 1 ]; then
    echo "IPv4 forwarding was already on; left as it is"
  else
    echo "enabled IPv4 forwarding (net.ipv4.ip_forward=1; it was $fwd)"
  fi
  echo "added nftables table ip $table: masquerade $subnet out of $out"
  echo "  the stack reaches the wider network through $out; undo with: sudo $0 --down --nat --tun $tun"
}

nat_down() {
  local table state fwd
  table=$(nat_table)
  state="$nat_state_dir/$table"
  if [ ! -e "$state" ]; then
    echo "setup-tun.sh: no NAT set up for $tun; nothing to remove"
    return 0
  fi
  fwd=$(sed -n 's/^forward_before=//p' "$state")
  if nft list table ip "$table" >/dev/null 2>&1; then
    nft delete table ip "$table"
    echo "removed nftables table ip $table"
  fi
  if [ "$fwd" = 0 ]; then
    echo 0 > /proc/sys/net/ipv4/ip_forward
    echo "disabled IPv4 forwarding again (it was off before --nat)"
  fi
  rm -f "$state"
}

if [ "$nat" -eq 1 ]; then
  if [ "$down" -eq 1 ]; then nat_down; else nat_up; fi
  exit 0
fi

if [ "$down" -eq 1 ]; then
  if ! ip link show dev "$tun" >/dev/null 2>&1; then
    echo "setup-tun.sh: no device $tun; nothing to remove"
    exit 0
  fi
  ip tuntap del dev "$tun" mode tun || die "could not remove $tun (is a process still attached? stop tunstack first)"
  echo "removed TUN device $tun"
  exit 0
fi

[[ "$peer" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$ ]] || die "--peer $peer is not KERNEL_IP/PREFIX (for example 198.19.0.1/24)"
[[ "$mtu" =~ ^[0-9]+$ ]] && [ "$mtu" -ge 576 ] && [ "$mtu" -le 65535 ] || die "--mtu $mtu: must be a number from 576 to 65535"
id "$user" >/dev/null 2>&1 || die "no such user: $user"
[ -c /dev/net/tun ] || die "/dev/net/tun is missing: load the tun module (modprobe tun)"
if ! runuser -u "$user" -- test -r /dev/net/tun -a -w /dev/net/tun 2>/dev/null; then
  # Debian and most distributions ship /dev/net/tun as 0666: opening it is
  # harmless, creating a device still needs CAP_NET_ADMIN, and a persistent
  # device admits only its owner. Some images ship it 0600.
  chmod 0666 /dev/net/tun || die "$user cannot open /dev/net/tun and chmod 0666 failed"
  echo "made /dev/net/tun usable by $user (mode 0666, the usual default: creating devices still needs CAP_NET_ADMIN, and each device admits only its owner)"
fi
if ip link show dev "$tun" >/dev/null 2>&1; then
  die "a device named $tun already exists; remove it with: sudo $0 --down --tun $tun"
fi

ip tuntap add dev "$tun" mode tun user "$user" || die "could not create TUN device $tun"
cleanup() { ip tuntap del dev "$tun" mode tun 2>/dev/null || true; }
trap 'cleanup; die "setup failed; removed $tun again"' ERR
echo 1 > "/proc/sys/net/ipv6/conf/$tun/disable_ipv6" 2>/dev/null || true
ip link set dev "$tun" mtu "$mtu"
ip addr add "$peer" dev "$tun"
ip link set dev "$tun" up
trap - ERR

echo "created persistent TUN device $tun for user $user"
echo "  kernel side: $peer (route to the stack via $tun), MTU $mtu"
echo "  run as $user: tunstack up --tun $tun --peer $peer --addr <an address in ${peer%/*}'s subnet, e.g. ${peer%.*}.2>"
echo "  remove with:  sudo $0 --down --tun $tun"
