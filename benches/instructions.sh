#!/usr/bin/env bash
# User-space instructions per echoed message of a server, counted by callgrind: unlike time on a
# shared machine, the count moves only when the code does (and a little with how many messages
# each read brings, which the load sets), so two trees can be compared one run each.
#
#   bash benches/instructions.sh [--seconds S] [BENCH_ARGS...] -- SERVER_CMD...
#
# SERVER_CMD must listen on 127.0.0.1:$PORT (default 19870; exported for the command, and the
# literal word PORT in it is replaced). The load is `wsloop bench` (built here, release); its
# defaults are 100 connections x 16 in flight x 16 B binary. Example, this tree against another:
#
#   bash benches/instructions.sh -- target/release/wsloop echo --no-deflate --addr 127.0.0.1:PORT
#   bash benches/instructions.sh -- ../old/target/release/wsloop echo --no-deflate --addr 127.0.0.1:PORT
#
# Prints instructions / (messages the bench saw echoed); the server's start, handshakes and
# shutdown are counted too (a few thousandths of the total at these rates). Needs valgrind.
# KEEP=FILE keeps callgrind's output there, for `callgrind_annotate FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=8
bench_args=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        *) bench_args+=("$1"); shift ;;
    esac
done
[ "${1:-}" = -- ] || { echo "usage: $0 [--seconds S] [BENCH_ARGS...] -- SERVER_CMD..." >&2; exit 2; }
shift
[ ${#bench_args[@]} -gt 0 ] || bench_args=(--conns 100 --inflight 16 --size 16 --binary)
command -v valgrind >/dev/null || { echo "$0: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
export PORT=${PORT:-19870}
server=("${@//PORT/$PORT}")
cargo build --release --features cli --bin wsloop >&2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "${server[@]}" >/dev/null 2>"$out/server.err" &
pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.2
done
line=$(target/release/wsloop bench "ws://127.0.0.1:$PORT/" --seconds "$seconds" "${bench_args[@]}" | tail -1)
kill -INT $pid
wait $pid || true
[ -z "${KEEP:-}" ] || cp "$out/cg.out" "$KEEP"
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out/cg.out")
python3 - "$line" "$ir" <<'EOF'
import re, sys
line, ir = sys.argv[1], int(sys.argv[2])
rate = float(re.search(r"msgs_per_s=([0-9.]+)", line).group(1))
secs = float(re.search(r"seconds=([0-9.]+)", line).group(1))
msgs = rate * secs
print(f"messages={msgs:.0f} instructions={ir} per_message={ir / msgs:.0f}")
EOF
