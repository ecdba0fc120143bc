#!/usr/bin/env bash
# Multi-core scaling: echo on a Cluster of 1 vs 2 reactor threads (benches/cluster_echo.rs),
# driven by `wsloop bench`.
#
#   bash benches/scaling.sh [--seconds S] [--runs R] [--conns N] [--inflight K] [--size B]
#                           [--work N]
#
# Defaults: 5 s windows, 3 runs per setup, 100 connections x 16 in flight x 16 B messages.
# --work N makes the server's handler burn CPU per message (see benches/cluster_echo.rs), so
# that the server, not the load generator, is the bottleneck.
# Setups (this machine has 2 cores, and the load generator is one thread that needs a core too):
#   t1-pinned   1 reactor on core 0, load on core 1  (each on its own core)
#   t1          1 reactor, load, no pinning
#   t2          2 reactors, load, no pinning         (3 busy threads on 2 cores: load competes)
#   t2-pinned   2 reactors on cores 0-1, load on core 1
# Prints one summary line per run (the load generator's key=value line) and the median
# msgs_per_s per setup. Before each run it waits (up to 60 s) for the machine to be idle.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=5 RUNS=3 CONNS=100 INFLIGHT=16 SIZE=16 WORK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECS="$2"; shift ;;
        --runs) RUNS="$2"; shift ;;
        --conns) CONNS="$2"; shift ;;
        --inflight) INFLIGHT="$2"; shift ;;
        --size) SIZE="$2"; shift ;;
        --work) WORK="$2"; shift ;;
        -h|--help) sed -n 2,19p "$0"; exit 0 ;;
        *) echo "scaling.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(nproc)" -ge 2 ] || { echo "scaling.sh: needs 2 cores" >&2; exit 1; }

echo "== building" >&2
cargo build --release --features cli --bin wsloop >&2
SERVER=$(cargo bench --bench cluster_echo --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*cluster_echo-[^)]*\)).*/\1/p' | tail -1)
[ -x "$SERVER" ] || { echo "scaling.sh: cannot find the cluster_echo binary" >&2; exit 1; }
WSLOOP=target/release/wsloop

PID=""
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT

# Percent of both cores busy over one second.
busy_pct() {
    local a b i d busy=0 total=0
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    for i in 1 2 3 4 5 6 7 8; do
        d=$(( b[i] - a[i] )); total=$(( total + d ))
        [ $i = 4 ] || [ $i = 5 ] || busy=$(( busy + d ))
    done
    echo $(( total > 0 ? 100 * busy / total : 0 ))
}

wait_idle() {
    local i
    for i in $(seq 60); do
        [ "$(busy_pct)" -le 10 ] && return 0
    done
    echo "scaling.sh: warning: machine still busy, measuring anyway" >&2
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run NAME THREADS SERVER_CPUS LOAD_CPUS (cpus "" = unpinned)
run() {
    local name=$1 threads=$2 scpus=$3 lcpus=$4 port out
    port=$(free_port)
    out=$(mktemp)
    local spin=() lpin=()
    [ -z "$scpus" ] || spin=(taskset -c "$scpus")
    [ -z "$lcpus" ] || lpin=(taskset -c "$lcpus")
    "${spin[@]}" "$SERVER" --threads "$threads" --addr "127.0.0.1:$port" --seconds $((SECS + 30)) \
        --work "$WORK" >"$out" &
    PID=$!
    for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.05; done
    local line
    line=$("${lpin[@]}" "$WSLOOP" bench "ws://127.0.0.1:$port/" --conns "$CONNS" --inflight "$INFLIGHT" \
        --size "$SIZE" --seconds "$SECS" --server-pid "$PID" 2>/dev/null | tail -1)
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
    rm -f "$out"
    echo "$name $line"
}

declare -A RESULTS
for setup in "t1-pinned 1 0 1" "t1 1 - -" "t2 2 - -" "t2-pinned 2 0-1 1"; do
    set -- $setup
    name=$1 threads=$2 scpus=$3 lcpus=$4
    [ "$scpus" = - ] && scpus=""
    [ "$lcpus" = - ] && lcpus=""
    for r in $(seq "$RUNS"); do
        wait_idle
        line=$(run "$name" "$threads" "$scpus" "$lcpus")
        echo "$line"
        mps=$(echo "$line" | sed -n 's/.*msgs_per_s=\([0-9.]*\).*/\1/p')
        RESULTS[$name]="${RESULTS[$name]:-} ${mps:-0}"
    done
done

echo
echo "setup       median msgs/s   (runs)"
for name in t1-pinned t1 t2 t2-pinned; do
    median=$(echo ${RESULTS[$name]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-11s %13s   (%s)\n' "$name" "$median" "${RESULTS[$name]# }"
done
