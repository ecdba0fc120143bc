#!/usr/bin/env bash
# 10 connections x 1 MiB binary echo, 1 in flight: messages/s of one or more wsloop servers
# against the raw TCP echo (benches/peers/ raw_echo, the ceiling: it bounces bytes as they
# come) and the same echo holding each frame until it is whole (`raw_echo --whole`: what any
# server that hands whole messages to its application pays, and nothing else), in alternating
# rounds on one machine, server on core 0 and load on core 1; prints each round, then medians
# and ratios.
#
#   bash benches/large.sh [--rounds N] [--seconds S] [--size BYTES] [WSLOOP_BINARY...]
#
# The binaries default to this tree's target/release/wsloop (built here); give others (say, a
# copy built from an earlier tree) to compare them in the same run. The load is this tree's
# `wsloop bench`, the same for every server.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 seconds=5 size=1048576
bins=()
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        *) bins+=("$1"); shift ;;
    esac
done
cargo build --release --features cli --bin wsloop >&2
cargo build --release --manifest-path benches/peers/Cargo.toml --target-dir target --bin raw_echo >&2
[ ${#bins[@]} -gt 0 ] || bins=(target/release/wsloop)
port=19910
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# cell NAME CMD...: one run against CMD (listening on $port); appends msgs/s to $out/NAME.
cell() {
    local name=$1 raw=()
    shift
    [ "$name" = raw ] || [ "$name" = whole ] && raw=(--raw-echo)
    taskset -c 0 "$@" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    local line
    line=$(taskset -c 1 target/release/wsloop bench "ws://127.0.0.1:$port/" --conns 10 --inflight 1 \
        --size "$size" --binary --seconds "$seconds" --server-pid "$pid" "${raw[@]}" 2>/dev/null | tail -1)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local rate cpu
    rate=$(grep -o 'msgs_per_s=[0-9.]*' <<<"$line" | cut -d= -f2)
    cpu=$(grep -o 'server_cpu_us_per_msg=[0-9.]*' <<<"$line" | cut -d= -f2)
    echo "$rate" >>"$out/$name"
    printf '  %-6s %8s msgs/s  server %s us/msg  %s\n' "$name" "$rate" "$cpu" \
        "$(grep -o 'other_cpu_pct=[0-9.]*' <<<"$line")"
}

for r in $(seq "$rounds"); do
    echo "round $r" >&2
    # The order turns each round, so that no server always follows the same one.
    order=(raw whole "${!bins[@]}")
    (( r % 2 == 0 )) && order=("${!bins[@]}" whole raw)
    for i in "${order[@]}"; do
        if [ "$i" = raw ]; then
            cell raw target/release/raw_echo --addr "127.0.0.1:$port"
        elif [ "$i" = whole ]; then
            cell whole target/release/raw_echo --addr "127.0.0.1:$port" --whole
        else
            cell "w$i" "${bins[$i]}" echo --no-deflate --addr "127.0.0.1:$port"
        fi
    done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
raw=$(median "$out/raw")
whole=$(median "$out/whole")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
for i in "${!bins[@]}"; do echo "w$i: ${bins[$i]}"; done
echo "medians of $rounds rounds, ${seconds}s each, $size B:"
echo "  raw echo: $raw msgs/s"
echo "  raw echo, whole frames: $whole msgs/s, ratio to raw echo $(ratio "$whole" "$raw")"
for i in "${!bins[@]}"; do
    m=$(median "$out/w$i")
    echo "  w$i: $m msgs/s, ratio to raw echo $(ratio "$m" "$raw"), to whole frames $(ratio "$m" "$whole")"
done
