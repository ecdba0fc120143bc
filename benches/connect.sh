#!/usr/bin/env bash
# Connection throughput: `wsloop echo --no-deflate` against uWebSockets' EchoServer, side by side.
#
#   bash benches/connect.sh --uws PATH [--rounds R] [--conns N] [--seconds S] [--out DIR]
#                           [--row burst|churn] [--rt] [--server NAME=BINARY]...
#
# Two rows (or the one --row names), each R rounds (default 3) with the servers in a different order every round:
#   burst: `wsloop bench --mode connect --conns N` (default 5000): handshakes/s and latency;
#   churn: `wsloop bench --mode churn --conns 100 --seconds S` (default 3): connections opened,
#          upgraded, echoed once and closed per second, from 32 source addresses of 127/8.
# Every server runs pinned to core 0, the load generator to core 1, both at nice $CONNECT_NICE
# (default -10: ahead of ordinary jobs on a shared machine, when run as root), or with --rt
# under SCHED_FIFO (chrt -f 10, as root): on a machine shared with other jobs that is the
# closest to an idle one, and the runs are short (the kernel still leaves other tasks 5% of
# each core). Server CPU comes from /proc/PID/stat (--server-pid). Prints every round's
# key=value figures, then the medians per server and their ratios to uWebSockets.
#
# --uws PATH: uWebSockets' examples/EchoServer.cpp built with its port taken from argv[1], e.g.
#   git clone https://github.com/uNetworking/uWebSockets && git clone \
#       https://github.com/uNetworking/uSockets uWebSockets/uSockets
#   # EchoServer.cpp: `int main(int argc, char **argv)`, `int port = argc > 1 ? atoi(argv[1])
#   # : 9001;`, and `.listen(port, [port](auto *listen_socket) {...})`
#   for f in uSockets/src/*.c uSockets/src/eventing/*.c uSockets/src/crypto/*.c; do
#       gcc -O3 -flto -DLIBUS_NO_SSL -IuSockets/src -c $f -o obj/$(basename $f .c).o; done
#   g++ -O3 -flto -std=c++20 -DLIBUS_NO_SSL -IuSockets/src -IuWebSockets/src \
#       EchoServer.cpp obj/*.o -lz -o EchoServer
# --server NAME=BINARY adds another `wsloop` binary as a server (say, a build with a change).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 CONNS=5000 SECS=3 OUT=target/connect UWS="" EXTRA=() ROW=both PRIO=()
while [ $# -gt 0 ]; do
    case "$1" in
        --uws) UWS="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --conns) CONNS="$2"; shift ;;
        --seconds) SECS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --row) ROW="$2"; shift ;;
        --rt) PRIO=(chrt -f 10) ;;
        --server) EXTRA+=("$2"); shift ;;
        -h|--help) sed -n 2,27p "$0"; exit 0 ;;
        *) echo "connect.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -x "$UWS" ] || { echo "connect.sh: give --uws PATH to uWebSockets' EchoServer (see --help)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "connect.sh: needs 2 cores" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
[ ${#PRIO[@]} -gt 0 ] || PRIO=(nice -n "${CONNECT_NICE:--10}")
mkdir -p "$OUT"
RAW="$OUT/raw.txt"
: >"$RAW"

cargo build --release --features cli -q
WSLOOP=target/release/wsloop
SERVERS=("wsloop=$WSLOOP echo --no-deflate --addr 127.0.0.1:PORT" "uws=$UWS PORT")
for s in "${EXTRA[@]}"; do
    SERVERS+=("${s%%=*}=${s#*=} echo --no-deflate --addr 127.0.0.1:PORT")
done

# A port nothing listens on (a server left over on a port with SO_REUSEPORT would share it).
free_port() {
    local port=$((20000 + RANDOM % 20000))
    while ss -Hltn "sport = :$port" | grep -q .; do port=$((port + 1)); done
    echo "$port"
}

# run ROW NAME COMMAND BENCH-ARGS...: one server, one load run; appends ROW NAME key=value.
run() {
    local row=$1 name=$2 cmd=$3 port pid line
    shift 3
    port=$(free_port)
    "${PRIO[@]}" taskset -c 0 ${cmd//PORT/$port} >"$OUT/$name.server.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
    line=$("${PRIO[@]}" taskset -c 1 "$WSLOOP" bench "ws://127.0.0.1:$port/" --server-pid "$pid" \
        "$@" 2>>"$OUT/$name.bench.log" | tail -1) || true
    kill "$pid" 2>/dev/null || echo "$name on port $port had already exited" >&2
    wait "$pid" 2>/dev/null || true
    echo "row=$row server=$name $line" | tee -a "$RAW"
}

for r in $(seq "$ROUNDS"); do
    n=${#SERVERS[@]}
    for k in $(seq 0 $((n - 1))); do
        spec=${SERVERS[$(((k + r) % n))]}
        if [ "$ROW" != churn ]; then
            run burst "${spec%%=*}" "${spec#*=}" --mode connect --conns "$CONNS"
        fi
        if [ "$ROW" != burst ]; then
            run churn "${spec%%=*}" "${spec#*=}" --mode churn --conns 100 --seconds "$SECS"
        fi
    done
done

# Medians per row and server, and each server's ratio to uws.
awk '
function med(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j] + 0 < a[j - 1] + 0; j--) {
        t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
    }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    k = v["row"] SUBSEP v["server"]
    seen[k] = 1; rows[v["row"]] = 1; servers[v["server"]] = 1
    rate = v["row"] == "churn" ? v["conns_per_s"] : v["handshakes_per_s"]
    R[k] = R[k] " " rate; P[k] = P[k] " " v["handshake_p99_us"]
    C[k] = C[k] " " v["server_cpu_us_per_conn"]; E[k] += v["errors"]
}
END {
    print "| row | server | rounds | per s (median) | handshake p99 ms | server CPU us per conn | errors | rate / uws | p99 / uws |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (row in rows) for (s in servers) {
        k = row SUBSEP s; if (!(k in seen)) continue
        u = row SUBSEP "uws"
        n = split(R[k], tmp, " ")
        printf "| %s | %s | %d | %.0f | %.1f | %.1f | %d | %.2f | %.2f |\n", row, s, n, med(R[k]),
            med(P[k]) / 1000, med(C[k]), E[k], med(R[k]) / med(R[u]), med(P[k]) / med(P[u])
    }
}' "$RAW" | tee "$OUT/results.md"
