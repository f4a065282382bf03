#!/usr/bin/env bash
# Install the Debian packages the tests, benchmark and demo drive as real
# peers (the kernel's own tools). Idempotent: does nothing when all are present.
set -euo pipefail
pkgs=(iproute2 curl iputils-ping nftables tcpdump procps util-linux openssl ca-certificates nsd unbound bind9-dnsutils ethtool python3 dnsperf g++ etcd-server etcd-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: missing packages: ${missing[*]}; run as root (sudo $0) to install them" >&2
  exit 1
fi
echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
