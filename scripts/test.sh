#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every
# test (unit, packet-script, simulator, and end-to-end tests in private
# network namespaces) in release mode. Needs root for the namespace tests;
# without root they print SKIPPED (and fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
fi
cargo build --release --all-targets
cargo test --release "$@"
