#!/usr/bin/env bash
# Reproduces every figure in docs/PERFORMANCE.md: core and agent criterion benches, the whole-process agent check,
# and the server load harness with its same-run baseline. Takes ~10 minutes on 2 cores.
#   scripts/bench.sh [LOAD_SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
OUT=target/bench-report.md
: > "$OUT"

echo "== core and agent benches (criterion)"
cargo bench -q -p tessera-core --bench core -- --warm-up-time 1 --measurement-time 4 >/dev/null
cargo bench -q -p tessera-agent --bench check -- --warm-up-time 1 --measurement-time 4 >/dev/null
python3 scripts/criterion-medians.py target | tee -a "$OUT"

echo "== checks from C and Python (criterion, then the Python harness on the same state, one run)"
cargo build -q --release -p tessera-ffi
TESSERA_BENCH_PYTHON=1 cargo bench -q -p tessera-ffi --bench check -- --warm-up-time 1 --measurement-time 4 \
  | grep '^|' | tee -a "$OUT"
python3 scripts/criterion-medians.py target ffi_baseline_hashmap_lookup_and_clock ffi_rust_check_allowed \
  ffi_c_abi_check_allowed ffi_rust_check_quota_feature ffi_c_abi_check_quota_feature | tee -a "$OUT"

echo "== whole-process agent check"
cargo build -q --release -p tessera-agent --bins --examples
python3 scripts/process-check.py target/release | tee -a "$OUT"

echo "== server load harness"
cargo build -q --release -p tessera-load
target/release/tessera-load --duration "$SECS" --connections "$CONNS" | tee -a "$OUT"
echo "== server-side usage ingestion (batches of 100 events; events/s = requests/s x 100)"
target/release/tessera-load --duration "$SECS" --connections "$CONNS" --scenarios usage-ingest | tee -a "$OUT"
echo "report: $OUT"
