#!/usr/bin/env bash
# Fairness under attack: a healthy client echoing 100 B every 50 ms (`wsloop bench --rate 20`)
# beside 30 clients that never read (benches/neverread.py), against `wsloop echo` on core 0;
# the clients on core 1. Prints the healthy client's latency (p50, p99, max) per run.
#
#   bash benches/fair.sh [--rounds N] [--seconds S] [WSLOOP_BINARY...]
#
# Runs per binary and round: `alone` (no attackers), `data` (64 KiB frames), `pong` (a ping
# flood whose pongs are never read), and the control runs `data-elsewhere` / `pong-elsewhere`:
# the same attack aimed at a second `wsloop echo` pinned to core 1, the clients' core, so that
# what the client machine's own load costs the healthy client shows apart from the server's.
# Binaries default to this tree's target/release/wsloop (built here). Needs python3, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=1 seconds=10
bins=()
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        *) bins+=("$1"); shift ;;
    esac
done
cargo build --release --features cli --bin wsloop >&2
[ ${#bins[@]} -gt 0 ] || bins=(target/release/wsloop)
port=19920 decoy=19921
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

serve() { # serve CORE PORT BINARY: starts an echo server, prints its pid
    taskset -c "$1" "$3" echo --no-deflate --addr "127.0.0.1:$2" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break
        sleep 0.05
    done
    echo "$pid"
}

run() { # run BINARY MODE
    local bin=$1 mode=$2 srv target=$port att="" other=""
    srv=$(serve 0 "$port" "$bin")
    pids+=("$srv")
    case $mode in
        *-elsewhere)
            other=$(serve 1 "$decoy" "$bin")
            pids+=("$other")
            target=$decoy ;;
    esac
    if [ "$mode" != alone ]; then
        taskset -c 1 python3 benches/neverread.py 127.0.0.1 "$target" 30 $((seconds + 2)) "${mode%-elsewhere}" >/dev/null &
        att=$!
        sleep 1
    fi
    taskset -c 1 "$bin" bench "ws://127.0.0.1:$port/" --conns 1 --rate 20 --size 100 \
        --seconds "$seconds" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
l = d["latency_us"]
print("%-16s p50 %5.1f ms  p99 %5.1f ms  max %5.1f ms  lost %d errors %d  other CPU %3.0f%%" % (
    sys.argv[1], l["p50"] / 1e3, l["p99"] / 1e3, l["max"] / 1e3, d["lost"], d["errors"],
    d["cpu"]["other_pct"]))' "$mode"
    [ -z "$att" ] || wait "$att"
    kill "$srv" $other 2>/dev/null || true
    wait "$srv" $other 2>/dev/null || true
}

for r in $(seq "$rounds"); do
    for bin in "${bins[@]}"; do
        echo "round $r: $bin"
        for mode in alone data pong data-elsewhere pong-elsewhere; do
            run "$bin" "$mode"
        done
    done
done
