#!/usr/bin/env bash
# End-to-end benchmark: wsloop's echo against peer echo servers, driven by `wsloop bench`.
#
#   bash benches/e2e.sh [--quick] [--seconds S] [--out DIR] [--no-memory] [--no-matrix]
#                       [--targets ROUNDS]
#
# Builds release binaries (the `wsloop` command, for `echo` and `bench`; the peers in benches/peers/:
# tokio-tungstenite and fastwebsockets echoes on current-thread runtimes, a raw TCP echo on mio,
# and wsloop_echo, `wsloop echo`'s handler with a configurable connection limit), then
#   1. runs every server pinned to core 0 and the load generator pinned to core 1 (taskset) over
#      1 / 100 / 1,000 connections x 16 B / 1 KiB / 64 KiB / 1 MiB x in-flight 1 and 16 (binary
#      messages; cells that would keep about a gigabyte in flight are skipped), plus the
#      issue's target rows (10 connections x 16 KiB and 1 MiB) and the target rows in text, and
#      a few permessage-deflate rows (wsloop only: the peers do not implement it);
#   2. measures server RSS with 10,000 idle connections (and as many as the fd limit allows) for
#      wsloop, with and without deflate, and for the peers.
# Server CPU time per message comes from the server's utime + stime in /proc/PID/stat, read by
# the load generator at the start and end of its window (--server-pid).
# The raw TCP echo does no handshake and bounces bytes unparsed; `wsloop bench --raw-echo` sends it the
# same masked frames and verifies them when they come back still masked.
#
# On a shared machine: the server and the load generator run at nice $E2E_NICE (default -10,
# i.e. ahead of ordinary jobs, when run as root), and before each cell the script waits up to
# $E2E_QUIET_WAIT seconds (default 60) for both cores to be at least 90% idle.
#
# --targets R runs only the issue's target rows (and the deflate rows), R rounds with the servers
# in a different order each round, and reports medians: steadier numbers on a shared machine.
#
# Output: DIR/results.md (Markdown tables), DIR/raw.txt (every key=value line), DIR/*.log.
# The machine should be otherwise idle: a cell is repeated (once) if other processes used more
# than 20% of a core during it; the `other` column shows what was left.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0 SECS="" OUT=target/e2e MEMORY=1 MATRIX=1 TARGETS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --seconds) SECS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --no-memory) MEMORY=0 ;;
        --no-matrix) MATRIX=0 ;;
        --targets) TARGETS="$2"; MATRIX=0; MEMORY=0; shift ;;
        -h|--help) sed -n 2,35p "$0"; exit 0 ;;
        *) echo "e2e.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$SECS" ] || { [ $QUICK = 1 ] && SECS=2 || SECS=3; }
mkdir -p "$OUT"
RAW="$OUT/raw.txt"
: >"$RAW"

if [ "$(nproc)" -lt 2 ]; then
    echo "e2e.sh: needs 2 cores (server on core 0, load on core 1)" >&2
    exit 1
fi
ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)
NICE=${E2E_NICE:--10}
QUIET_WAIT=${E2E_QUIET_WAIT:-60}
# nice below 0 needs root; otherwise run at the normal priority.
nice -n "$NICE" true 2>/dev/null || NICE=0
RUN=(nice -n "$NICE")

echo "== building" >&2
cargo build --release --features cli --bin wsloop >&2
cargo build --release --manifest-path benches/peers/Cargo.toml --target-dir target >&2
BIN=target/release
WSLOOP=$BIN/wsloop

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Busy share (percent of all cores) over one second.
busy_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local busy=0 total=0 i d
    for i in 1 2 3 4 5 6 7 8; do
        d=$(( b[i] - a[i] ))
        total=$(( total + d ))
        [ $i = 4 ] || [ $i = 5 ] || busy=$(( busy + d ))
    done
    echo $(( total > 0 ? 100 * busy / total : 0 ))
}

wait_quiet() {
    local i pct
    for i in $(seq "$QUIET_WAIT"); do
        pct=$(busy_pct)
        [ "$pct" -lt 10 ] && return 0
        [ $(( i % 10 )) = 1 ] && echo "   (machine ${pct}% busy, waiting for it to calm down)" >&2
    done
    echo "   (machine still busy, measuring anyway)" >&2
}

port_of() {
    case "$1" in
        wsloop) echo 19001 ;; tokio-tungstenite) echo 19002 ;; fastwebsockets) echo 19003 ;;
        raw-tcp) echo 19004 ;; wsloop-deflate) echo 19005 ;; wsloop-max) echo 19006 ;;
        wsloop-max-deflate) echo 19007 ;;
    esac
}

# start_server NAME: starts it on core 0 and sets SERVER_PID.
start_server() {
    local name=$1 port
    port=$(port_of "$name")
    local cmd
    case "$name" in
        wsloop) cmd=($WSLOOP echo --no-deflate --addr 127.0.0.1:$port) ;;
        wsloop-deflate) cmd=($WSLOOP echo --addr 127.0.0.1:$port) ;;
        wsloop-max) cmd=($BIN/wsloop_echo --no-deflate --max-connections 1000000 --addr 127.0.0.1:$port) ;;
        wsloop-max-deflate) cmd=($BIN/wsloop_echo --max-connections 1000000 --addr 127.0.0.1:$port) ;;
        tokio-tungstenite) cmd=($BIN/tt_echo --addr 127.0.0.1:$port) ;;
        fastwebsockets) cmd=($BIN/fws_echo --addr 127.0.0.1:$port) ;;
        raw-tcp) cmd=($BIN/raw_echo --addr 127.0.0.1:$port) ;;
    esac
    RUST_LOG=error "${RUN[@]}" taskset -c 0 "${cmd[@]}" >"$OUT/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for i in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "e2e.sh: $name did not start listening on $port" >&2
    exit 1
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

declare -A SPID

# cell SERVER CONNS SIZE INFLIGHT [load flags...]: one measurement, appended to $RAW.
cell() {
    local server=$1 conns=$2 size=$3 inflight=$4
    shift 4
    local flags=("$@") port line other try
    port=$(port_of "$server")
    [ "$server" = raw-tcp ] && flags+=(--raw-echo)
    for try in 1 2; do
        wait_quiet
        line=$("${RUN[@]}" taskset -c 1 "$WSLOOP" bench "ws://127.0.0.1:$port/" --conns "$conns" --size "$size" \
            --inflight "$inflight" --seconds "$SECS" --server-pid "${SPID[$server]}" "${flags[@]}" \
            2>>"$OUT/load.log" | grep '^bench=echo' || true)
        [ -n "$line" ] || line="conns=$conns size=$size inflight=$inflight errors=failed"
        other=$(sed -n 's/.*other_cpu_pct=\([0-9.-]*\).*/\1/p' <<<"$line")
        if [ -z "$other" ] || awk "BEGIN {exit !($other < 20)}"; then break; fi
        echo "   (others used ${other}% of a core: repeating)" >&2
    done
    local mode=binary
    [[ " ${flags[*]} " = *" --binary "* ]] || mode=text
    [[ " ${flags[*]} " = *" --deflate "* ]] && mode="$mode+deflate"
    echo "server=$server mode=$mode $line" >>"$RAW"
    echo "   $server $mode: $line" >&2
}

SERVERS=(wsloop tokio-tungstenite fastwebsockets raw-tcp)
if [ $MATRIX = 1 ]; then
    echo "== throughput matrix, ${SECS} s per cell" >&2
    for s in "${SERVERS[@]}" wsloop-deflate; do
        start_server "$s"
        SPID[$s]=$SERVER_PID
    done
    if [ $QUICK = 1 ]; then
        CONNS=(1 100) SIZES=(16 65536) INFLIGHTS=(1 16)
    else
        CONNS=(1 100 1000) SIZES=(16 1024 65536 1048576) INFLIGHTS=(1 16)
    fi
    for c in "${CONNS[@]}"; do
        for z in "${SIZES[@]}"; do
            for k in "${INFLIGHTS[@]}"; do
                # Skip what keeps a gigabyte or so in flight.
                [ $(( c * z * k )) -ge $(( 512 << 20 )) ] && continue
                echo "-- $c conns, $z B, in-flight $k" >&2
                for s in "${SERVERS[@]}"; do cell "$s" "$c" "$z" "$k" --binary; done
            done
        done
    done
    echo "-- target rows: 10 conns x 16 KiB / 1 MiB, binary; target rows in text" >&2
    for z in 16384 1048576; do
        for s in "${SERVERS[@]}"; do cell "$s" 10 "$z" 1 --binary; done
    done
    for row in "100 16 1" "100 16 16" "10 16384 1" "10 1048576 1"; do
        set -- $row
        for s in "${SERVERS[@]}"; do cell "$s" "$1" "$2" "$3"; done
    done
    echo "-- permessage-deflate (wsloop only), text" >&2
    for row in "100 16 1" "100 1024 1" "10 16384 1" "10 65536 1" "10 1048576 1"; do
        set -- $row
        cell wsloop "$1" "$2" "$3"
        cell wsloop-deflate "$1" "$2" "$3" --deflate
    done
    for s in "${SERVERS[@]}" wsloop-deflate; do stop_server "${SPID[$s]}"; done
fi

if [ "$TARGETS" -gt 0 ]; then
    echo "== target rows, $TARGETS rounds, ${SECS} s per cell" >&2
    for s in "${SERVERS[@]}" wsloop-deflate; do
        start_server "$s"
        SPID[$s]=$SERVER_PID
    done
    for round in $(seq "$TARGETS"); do
        # Rotate the order of the servers from round to round.
        order=("${SERVERS[@]:$(( (round - 1) % 4 ))}" "${SERVERS[@]:0:$(( (round - 1) % 4 ))}")
        echo "-- round $round: ${order[*]}" >&2
        for row in "100 16 1 --binary" "100 16 16 --binary" "10 16384 1 --binary" \
            "10 1048576 1 --binary" "100 16 1" "100 16 16" "10 16384 1" "10 1048576 1"; do
            set -- $row
            for s in "${order[@]}"; do cell "$s" "$@"; done
        done
        for row in "100 16 1" "100 1024 1" "10 16384 1" "10 1048576 1"; do
            set -- $row
            cell wsloop "$@"
            cell wsloop-deflate "$@" --deflate
        done
    done
    for s in "${SERVERS[@]}" wsloop-deflate; do stop_server "${SPID[$s]}"; done
fi

# idle_memory SERVER N [load flags...]: RSS before and with N idle connections, and whether the
# server still echoes (10 more connections, 2 s) while holding them.
idle_memory() {
    local server=$1 n=$2
    shift 2
    local port rss0 rss1 established answer line hold
    port=$(port_of "$server")
    start_server "$server"
    local pid=$SERVER_PID
    sleep 0.5
    rss0=$(rss_kb "$pid")
    hold=$(( 6 + n / 4000 ))
    taskset -c 1 "$WSLOOP" bench "ws://127.0.0.1:$port/" --mode connect --conns "$n" --hold "$hold" \
        --connect-concurrency 256 "$@" >"$OUT/idle.out" 2>"$OUT/idle.err" &
    local lpid=$!
    local i
    for i in $(seq 600); do
        grep -q 'all connections established' "$OUT/idle.err" 2>/dev/null && break
        sleep 0.1
    done
    sleep 1
    rss1=$(rss_kb "$pid")
    answer=$(taskset -c 1 "$WSLOOP" bench "ws://127.0.0.1:$port/" --conns 10 --seconds 2 "$@" 2>/dev/null \
        | grep '^bench=echo' | sed -n 's/.*msgs_per_s=\([0-9]*\).*errors=\([0-9]*\).*/\1 msg\/s, \2 errors/p')
    wait "$lpid" || true
    line=$(grep '^bench=connect' "$OUT/idle.out" || echo "established=0 errors=failed")
    established=$(sed -n 's/.*established=\([0-9]*\).*/\1/p' <<<"$line")
    stop_server "$pid"
    local per="n/a"
    [ "${established:-0}" -gt 0 ] && per=$(( (rss1 - rss0) * 1024 / established ))
    local mode=plain
    [[ " $* " = *" --deflate "* ]] && mode=deflate
    echo "memory server=$server offer=$mode conns=$n established=${established:-0} rss0_kb=$rss0 rss_kb=$rss1 bytes_per_conn=$per answering=\"${answer:-none}\" $line" >>"$RAW"
    echo "   $server $mode: $n idle -> established ${established:-0}, RSS ${rss0} -> ${rss1} KiB, $per B/conn, echo: ${answer:-none}" >&2
}

if [ $MEMORY = 1 ]; then
    echo "== idle memory (fd limit $FDS, ports $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range))" >&2
    idle_memory wsloop-max 10000
    idle_memory wsloop-max-deflate 10000 --deflate
    if [ $QUICK = 0 ]; then
        idle_memory tokio-tungstenite 10000
        idle_memory fastwebsockets 10000
        # As many as the fd limit allows both processes (up to 50,000), and the local ports.
        ports=$(awk '{print $2 - $1}' /proc/sys/net/ipv4/ip_local_port_range)
        max=$(( FDS - 200 ))
        [ "$max" -gt 50000 ] && max=50000
        [ "$max" -gt $(( ports - 2000 )) ] && max=$(( ports - 2000 ))
        if [ "$max" -gt 10000 ]; then
            idle_memory wsloop-max "$max"
            idle_memory wsloop-max-deflate "$max" --deflate
        fi
    fi
fi

python3 - "$RAW" "$SECS" >"$OUT/results.md" <<'EOF'
import sys, re, math
raw, secs = sys.argv[1], sys.argv[2]
rows, mem = [], []
for line in open(raw):
    kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
    kv = {k: v.strip('"') for k, v in kv.items()}
    (mem if line.startswith('memory') else rows).append(kv)

def num(kv, k):
    try:
        return float(kv.get(k, 'nan'))
    except ValueError:
        return math.nan

def size(b):
    b = int(b)
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB" if b >= 1024 else f"{b} B"

def f(x, d=0):
    return '-' if math.isnan(x) else f"{x:,.{d}f}"

# Repeated runs of a cell on a server (--targets) are folded into their medians, field by field.
runs = {}
for r in rows:
    key = (r['mode'].replace('+deflate', ''), int(r['conns']), int(r['size']), int(r['inflight']))
    server = r['server'] if 'deflate' not in r['mode'] else 'wsloop+deflate'
    runs.setdefault(key, {}).setdefault(server, []).append(r)

def median(rs, k):
    v = sorted(x for x in (num(r, k) for r in rs) if not math.isnan(x))
    if not v:
        return 'nan'
    n = len(v)
    return str(v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2)

cells = {}
for key, by_server in runs.items():
    for server, rs in by_server.items():
        m = {k: median(rs, k) for k in ('msgs_per_s', 'mbytes_per_s', 'p50_us', 'p99_us',
             'server_cpu_us_per_msg', 'server_cpu_pct', 'client_cpu_pct', 'other_cpu_pct')}
        m['errors'] = str(sum(int(r['errors']) if r.get('errors', '').isdigit() else 1 for r in rs))
        m['runs'] = len(rs)
        cells.setdefault(key, {})[server] = m

print(f"### Throughput and latency ({secs} s per cell)\n")
print("Ratios are msgs/s over tokio-tungstenite's in the same cell (CPU: tokio-tungstenite's CPU "
      "time per message over the server's, so higher is better there too). With several runs "
      "per cell, every column is the median of the runs.\n")
print("| mode | conns | size | in-flight | server | msgs/s | MB/s | p50 us | p99 us | server CPU us/msg | server CPU % | load CPU % | other % | x tt (msgs/s) | x tt (CPU/msg) | errors | runs |")
print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
order = ['wsloop', 'wsloop+deflate', 'tokio-tungstenite', 'fastwebsockets', 'raw-tcp']
for key in sorted(cells, key=lambda k: (k[0] != 'binary', k[1], k[2], k[3])):
    c = cells[key]
    tt = c.get('tokio-tungstenite', {})
    for s in order:
        if s not in c:
            continue
        r = c[s]
        rate, cpu = num(r, 'msgs_per_s'), num(r, 'server_cpu_us_per_msg')
        x = rate / num(tt, 'msgs_per_s') if tt else math.nan
        xc = num(tt, 'server_cpu_us_per_msg') / cpu if tt and cpu else math.nan
        print(f"| {key[0]} | {key[1]:,} | {size(key[2])} | {key[3]} | {s} | {f(rate)} | {f(num(r, 'mbytes_per_s'), 1)} "
              f"| {f(num(r, 'p50_us'), 0)} | {f(num(r, 'p99_us'), 0)} | {f(cpu, 2)} | {f(num(r, 'server_cpu_pct'))} "
              f"| {f(num(r, 'client_cpu_pct'))} | {f(num(r, 'other_cpu_pct'))} | {f(x, 2)} | {f(xc, 2)} | {r.get('errors', '-')} | {r['runs']} |")

print("\n### Ratios by cell\n")
print("| mode | conns | size | in-flight | wsloop / tt | fws / tt | wsloop / fws | wsloop / raw TCP | wsloop CPU/msg vs tt | wsloop CPU/msg vs raw |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for key in sorted(cells, key=lambda k: (k[0] != 'binary', k[1], k[2], k[3])):
    c = cells[key]
    g = lambda s, k: num(c.get(s, {}), k)
    w, t, fw, rw = (g(s, 'msgs_per_s') for s in ('wsloop', 'tokio-tungstenite', 'fastwebsockets', 'raw-tcp'))
    wc, tc, rc = (g(s, 'server_cpu_us_per_msg') for s in ('wsloop', 'tokio-tungstenite', 'raw-tcp'))
    if math.isnan(t):
        continue
    print(f"| {key[0]} | {key[1]:,} | {size(key[2])} | {key[3]} | {f(w / t, 2)} | {f(fw / t, 2)} | {f(w / fw, 2)} | "
          f"{f(w / rw, 2)} | {f(tc / wc, 2)}x less | {f(wc / rc, 2)}x |")

if mem:
    print("\n### Memory with idle connections\n")
    print("| server | deflate offered | connections | established | RSS before | RSS with them | bytes per idle connection | echo while holding them (10 conns, 2 s) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for m in mem:
        print(f"| {m['server']} | {'yes' if m['offer'] == 'deflate' else 'no'} | {int(m['conns']):,} | {int(m['established']):,} "
              f"| {int(m['rss0_kb']):,} KiB | {int(m['rss_kb']):,} KiB | {m['bytes_per_conn']} | {m['answering']} |")
EOF
cat "$OUT/results.md"
