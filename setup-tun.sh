#!/usr/bin/env bash
# Create (or remove) a persistent TUN device that a non-root user can run
# tunstack on, with the kernel-side address and route already in place.
#
#   sudo ./setup-tun.sh [--user USER] [--tun NAME] [--peer KERNEL_IP/PREFIX] [--mtu BYTES]
#   sudo ./setup-tun.sh --down [--tun NAME]
#
# Then, as USER:   tunstack up --tun NAME --addr STACK_IP --peer KERNEL_IP/PREFIX
# (tunstack attaches to the existing device and leaves it in place on exit).
set -euo pipefail

tun=tunstack0
peer=198.19.0.1/24
mtu=1500
user=${SUDO_USER:-$(id -un)}
down=0

die() { echo "setup-tun.sh: $*" >&2; exit 1; }
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tun) tun=${2:?--tun needs a device name}; shift 2 ;;
    --peer) peer=${2:?--peer needs KERNEL_IP/PREFIX}; shift 2 ;;
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
