#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), JOBS at a time (default 2), and fails
# if any target finds a crash, a timeout or an out-of-memory input.
#
#   bash fuzz/run.sh 30                       # CI: about 30 s per target
#   bash fuzz/run.sh 600                      # the 10-minute runs
#   TARGETS="decoder server" bash fuzz/run.sh 60
#   SANITIZER=none bash fuzz/run.sh 30        # if AddressSanitizer is unavailable
#
# Needs cargo-fuzz (installed here if missing). The toolchain is stable, so the nightly-only
# flags cargo-fuzz passes are allowed with RUSTC_BOOTSTRAP=1. Corpora grow in fuzz/corpus/
# (seeded from fuzz/seeds/), logs go to fuzz/logs/, crashing inputs to fuzz/artifacts/<target>/;
# an input that found a bug belongs in tests/fuzz_corpus/<target>/, which
# tests/fuzz_regressions.rs replays on every `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SECONDS_EACH=${1:-30}
TARGETS=${TARGETS:-handshake decoder roundtrip server connection}
JOBS=${JOBS:-2}
SANITIZER=${SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -O -s "$SANITIZER"

mkdir -p logs artifacts
run_one() {
    local target=$1
    mkdir -p "corpus/$target" "artifacts/$target"
    cp -n "seeds/$target/"* "corpus/$target/" 2>/dev/null || true
    # libFuzzer exits non-zero on a crash, a timeout (-timeout, seconds per input) or an input
    # that takes the process over -rss_limit_mb.
    cargo fuzz run -O -s "$SANITIZER" "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"logs/$target.log" 2>&1
}

declare -A status
pids=()
names=()
for target in $TARGETS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        sleep 1
    done
    run_one "$target" &
    pids+=($!)
    names+=("$target")
done
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
        status[${names[$i]}]=ok
    else
        status[${names[$i]}]=FAILED
    fi
done

failed=0
printf '%-10s %8s %14s %10s  %s\n' target seconds executions "exec/s" result
for target in $TARGETS; do
    log="logs/$target.log"
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    printf '%-10s %8s %14s %10s  %s\n' "$target" "$SECONDS_EACH" "${runs:-?}" "${rate:-?}" \
        "${status[$target]}"
    if [ "${status[$target]}" != ok ]; then
        failed=1
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5 || true
    fi
done
exit $failed
