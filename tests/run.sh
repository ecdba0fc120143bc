#!/usr/bin/env bash
# wsloop's one test command: sets up the external interop clients, then runs every cargo test.
#
#   tests/run.sh [cargo test args] [-- test binary args]      (from any directory)
#
# Plain `cargo test` needs only the Rust toolchain: the tests that need an outside peer are
# `#[ignore = "needs <peer> (bash tests/run.sh)"]`. This script prepares every peer and runs
# them too (`--include-ignored`), except the long soak test (tests/soak.rs), which .ci/run runs
# on its own with a short WSLOOP_SOAK_SECS.
#
# - Python client: a venv at tests/interop/.venv with the packages of tests/interop/requirements.txt
#   (re-installed only when that file changes).
# - Node clients: `npm ci` in tests/interop/node (re-run only when package-lock.json changes):
#   `ws` for client.js, `playwright-core` (which downloads no browser) for browser.js.
# - Chromium (browser tests) and redis-server (Redis backplane tests): Debian's packages, installed
#   with apt-get when missing and we are root; otherwise the run fails saying how to install them.
#   Others can be given as WSLOOP_CHROMIUM=/path and WSLOOP_REDIS_SERVER=/path.
# - Exports WSLOOP_PYTHON (the venv's python), WSLOOP_NODE (node), WSLOOP_NODE_CLIENT_DIR,
#   WSLOOP_CHROMIUM and WSLOOP_REDIS_SERVER; the Rust tests spawn the clients and servers through
#   them and fail (never skip) if one is missing.
# - Runs cargo test with the `redis` and `cli` features (the Redis backplane, the `wsloop`
#   command), and with
#   `--include-ignored --skip soak`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
interop="$root/tests/interop"

die() { echo "tests/run.sh: $*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup)"
command -v python3 >/dev/null || die "python3 not found: install Python 3.10+ (Debian: apt-get install python3 python3-venv)"
command -v node >/dev/null || die "node not found: install Node.js 20+ (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm not found: install npm (Debian: apt-get install npm)"

# (a) Python venv with `websockets`.
venv="$interop/.venv"
stamp="$venv/.requirements.installed"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "tests/run.sh: creating Python venv at tests/interop/.venv" >&2
    python3 -m venv "$venv" ||
        die "could not create a venv: install the venv module (Debian: apt-get install python3-venv)"
fi
if ! cmp -s "$interop/requirements.txt" "$stamp"; then
    echo "tests/run.sh: installing Python interop requirements" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$interop/requirements.txt"
    cp "$interop/requirements.txt" "$stamp"
fi

# (b) Node client's dependencies (npm writes node_modules/.package-lock.json on install).
node_dir="$interop/node"
if [[ ! -f "$node_dir/node_modules/.package-lock.json" || "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]]; then
    echo "tests/run.sh: installing Node interop dependencies" >&2
    if [[ -f "$node_dir/package-lock.json" ]]; then
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
fi

# (c) Programs from Debian's packages, installed with apt-get when missing and we are root:
#     Chromium for the browser tests, redis-server for the Redis backplane tests.
apt_updated=
need_program() { # need_program PATH PACKAGE
    local path=$1 package=$2
    [[ -x "$path" ]] && return
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "tests/run.sh: installing $package (apt-get install $package)" >&2
        if [[ -z "$apt_updated" ]]; then
            apt-get update -qq >&2 || die "apt-get update failed"
            apt_updated=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2 ||
            die "apt-get could not install $package"
    fi
    [[ -x "$path" ]] || die "$path not found: install it (Debian: sudo apt-get install $package)"
}
chromium="${WSLOOP_CHROMIUM:-/usr/bin/chromium}"
need_program "$chromium" chromium
redis_server="${WSLOOP_REDIS_SERVER:-/usr/bin/redis-server}"
need_program "$redis_server" redis-server

# (d) Tell the Rust tests where the clients are.
export WSLOOP_PYTHON="$venv/bin/python"
export WSLOOP_NODE="$(command -v node)"
export WSLOOP_NODE_CLIENT_DIR="$node_dir"
export WSLOOP_CHROMIUM="$chromium"
export WSLOOP_REDIS_SERVER="$redis_server"

# (e) Everything else is cargo's, with the optional Redis backplane built in, the tests that
#     need the peers above (ignored by a plain `cargo test`) and without the long soak test.
cargo_args=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    cargo_args+=("$1")
    shift
done
[[ $# -gt 0 ]] && shift # the "--"
exec cargo test --features redis,cli "${cargo_args[@]}" -- --include-ignored --skip soak "$@"
