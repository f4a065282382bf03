#!/usr/bin/env bash
# The project's test command: installs the Debian packages the tests drive,
# then runs every test (unit and packet-script tests, simulator runs over many
# seeds, and end-to-end tests in private network namespaces) in release mode.
# The namespace tests need root: run as root, or this re-runs itself with sudo.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
  exec sudo env "PATH=$PATH" "CI=${CI:-}" "TUNSTACK_SEED=${TUNSTACK_SEED:-}" "$0" "$@"
fi
if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
fi
cargo build --release --all-targets
cargo test --release "$@"
# A short fuzzing pass over every target (scripts/fuzz.sh; README "Fuzzing").
# Skipped when arguments select particular tests.
if [ $# -eq 0 ] && [ "${TUNSTACK_FUZZ_SECS:-10}" != 0 ]; then
  scripts/fuzz.sh "${TUNSTACK_FUZZ_SECS:-10}"
fi
