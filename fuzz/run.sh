#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), JOBS at a time (default 2), and fails
# if any target finds a crash, a timeout or an out-of-memory input.
#
#   bash fuzz/run.sh 20                       # CI: 20 s per target
#   MERGE=1 bash fuzz/run.sh 1800             # the scheduled run: 30 min per target, then the
#                                             # inputs that found new coverage join fuzz/corpus/
#                                             # (commit them); see fuzz/README.md
#   COVERAGE=1 bash fuzz/run.sh 0             # only the line coverage of the corpus, per target
#   TARGETS="decoder server" bash fuzz/run.sh 60
#   SANITIZER=none bash fuzz/run.sh 30        # if AddressSanitizer is unavailable
#
# Needs cargo-fuzz (installed here if missing). The toolchain is stable, so the nightly-only
# flags cargo-fuzz passes are allowed with RUSTC_BOOTSTRAP=1. Each run reads fuzz/seeds/<target>
# (hand-made, make_seeds.py) and fuzz/corpus/<target> (committed, grown by MERGE=1 runs) and
# writes what it finds to fuzz/work/<target> (not committed); logs go to fuzz/logs/, crashing
# inputs to fuzz/artifacts/<target>/. An input that found a bug belongs in
# tests/fuzz_corpus/<target>/, which tests/fuzz_regressions.rs replays on every `cargo test`.
#
# COVERAGE=1 also reports the lines of wsloop's src/ that each target's corpus (seeds included)
# reaches, with `cargo fuzz coverage` and llvm-cov; it needs llvm-profdata and llvm-cov of
# rustc's LLVM version: `rustup component add llvm-tools`, or Debian's llvm-N package with
# LLVM_BIN=/usr/lib/llvm-N/bin (N from `rustc -vV`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SECONDS_EACH=${1:-30}
TARGETS=${TARGETS:-handshake decoder roundtrip server connection}
JOBS=${JOBS:-2}
SANITIZER=${SANITIZER:-address}
MERGE=${MERGE:-0}
COVERAGE=${COVERAGE:-0}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -O -s "$SANITIZER"

mkdir -p logs artifacts
run_one() {
    local target=$1
    mkdir -p "work/$target" "corpus/$target" "artifacts/$target"
    # libFuzzer exits non-zero on a crash, a timeout (-timeout, seconds per input) or an input
    # that takes the process over -rss_limit_mb. New inputs go to the first directory.
    cargo fuzz run -O -s "$SANITIZER" "$target" "work/$target" "corpus/$target" \
        "seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"logs/$target.log" 2>&1
    if [ "$MERGE" = 1 ]; then
        # Adds to corpus/<target> only the inputs that reach coverage it lacks.
        cargo fuzz run -O -s "$SANITIZER" "$target" "corpus/$target" "work/$target" \
            "seeds/$target" -- -merge=1 -rss_limit_mb=2048 -timeout=10 \
            >"logs/$target.merge.log" 2>&1
    fi
}

declare -A status
pids=()
names=()
if [ "$SECONDS_EACH" -gt 0 ]; then
    for target in $TARGETS; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
            sleep 1
        done
        run_one "$target" &
        pids+=($!)
        names+=("$target")
    done
fi
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
        status[${names[$i]}]=ok
    else
        status[${names[$i]}]=FAILED
    fi
done

# Lines of wsloop's own src/ reached by a target's corpus and seeds: in all ("covered/total
# (pct)"), then per file reached at all.
line_coverage() {
    local target=$1 bin profile llvm_bin
    llvm_bin=${LLVM_BIN:-$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin}
    cargo fuzz coverage -O -s none --llvm-path "$llvm_bin" "$target" "corpus/$target" \
        "seeds/$target" >"logs/$target.coverage.log" 2>&1 ||
        { echo "failed (logs/$target.coverage.log)"; return; }
    bin=$(find target -path "*/coverage/*/release/$target" -type f | head -1)
    profile="coverage/$target/coverage.profdata"
    "$llvm_bin/llvm-cov" report "$bin" -instr-profile="$profile" \
        -ignore-filename-regex='/(\.cargo|rustc|fuzz)/' |
        awk '/^TOTAL/ { total = sprintf("%d/%d (%s)", $8 - $9, $8, $10) }
             /^[^-T]/ && NR > 2 && $8 > $9 { sub(".*/src/", "", $1); files = files " " $1 " " $10 }
             END { print total ";" files }'
}

failed=0
if [ "$SECONDS_EACH" -gt 0 ]; then
    printf '%-10s %8s %12s %8s %7s %7s %7s  %s\n' \
        target seconds executions "exec/s" cov ft corpus result
fi
for target in $TARGETS; do
    log="logs/$target.log"
    if [ "$SECONDS_EACH" -gt 0 ]; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        # libFuzzer's last status line: cov (edges reached), ft (features: edges with hit counts
        # and the like), over the whole binary, dependencies included.
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
        ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
        files=$(find "corpus/$target" -type f | wc -l)
        printf '%-10s %8s %12s %8s %7s %7s %7s  %s\n' "$target" "$SECONDS_EACH" \
            "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$files" "${status[$target]}"
        if [ "${status[$target]}" != ok ]; then
            failed=1
            grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5 || true
        fi
    fi
done
if [ "$COVERAGE" = 1 ]; then
    echo "lines of src/ reached by each corpus (cargo fuzz coverage, llvm-cov report):"
    for target in $TARGETS; do
        printf '%-10s %s\n' "$target" "$(line_coverage "$target")"
    done
fi
exit $failed
