#!/usr/bin/env bash
# Run the benchmark as the README's performance section does:
#   sudo scripts/bench.sh [--quick] [--json FILE]
# Installs what it drives (nftables for loss injection, ethtool to switch
# veth offloads off), builds in release mode, and runs `tunstack bench`.
# Everything it sends stays inside network namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if ! command -v ethtool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ethtool \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ethtool; }
  else
    echo "bench.sh: ethtool missing (the veth offloads-off figures need it); run as root to install it" >&2
  fi
fi
cargo build --release --bin tunstack
exec target/release/tunstack bench "$@"
