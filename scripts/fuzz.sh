#!/usr/bin/env bash
# Run every cargo-fuzz (libFuzzer) target in fuzz/ for a bounded time and
# print, per target, the inputs executed and whether it crashed.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, all targets)
# Installs the nightly toolchain and cargo-fuzz if missing. Each target starts
# from its committed seed corpus (fuzz/corpus/TARGET) and adds what it finds to
# a scratch copy, so runs do not dirty the repository. A crash leaves its input
# in fuzz/artifacts/TARGET/ and makes the script exit non-zero.
# FUZZ_TARGET_DIR overrides the build directory (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi
target_dir=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
# No sanitizer: the library is safe Rust; libFuzzer's coverage and the
# debug assertions / overflow checks of `cargo fuzz build` are what find bugs.
build=(cargo +nightly fuzz build -s none --target-dir "$target_dir")
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
t0=$(date +%s)
"${build[@]}"
echo "fuzz build: $(( $(date +%s) - t0 )) s"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
printf '%-14s %12s %10s %s\n' target inputs exec/s result
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  cp fuzz/corpus/"$t"/* "$work/$t/" 2>/dev/null || true
  log="$work/$t.log"
  rc=0
  cargo +nightly fuzz run -s none --target-dir "$target_dir" "$t" "$work/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ "$rc" -eq 0 ]; then
    result="ok, 0 crashes"
  else
    result="CRASH (exit $rc): $(grep -o 'fuzz/artifacts/[^ ]*' "$log" | tail -1)"
    failed=1
    grep -m5 -E 'panicked|ERROR' "$log" || true
  fi
  printf '%-14s %12s %10s %s\n' "$t" "${runs:-?}" "${speed:-?}" "$result"
done
echo "total: $(( $(date +%s) - t0 )) s"
exit $failed
