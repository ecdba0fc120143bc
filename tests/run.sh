#!/usr/bin/env bash
# wsloop's one test command: sets up the external interop clients, then runs every cargo test.
#
#   tests/run.sh [extra cargo test args]      (from any directory)
#
# - Python client: a venv at tests/interop/.venv with the packages of tests/interop/requirements.txt
#   (re-installed only when that file changes).
# - Node clients: `npm ci` in tests/interop/node (re-run only when package-lock.json changes):
#   `ws` for client.js, `playwright-core` (which downloads no browser) for browser.js.
# - Chromium for the browser test: Debian's /usr/bin/chromium, installed with apt-get when it is
#   missing and we are root; otherwise the run fails saying how to install it. A Chromium
#   elsewhere can be given as WSLOOP_CHROMIUM=/path/to/chromium.
# - Exports WSLOOP_PYTHON (the venv's python), WSLOOP_NODE (node), WSLOOP_NODE_CLIENT_DIR and
#   WSLOOP_CHROMIUM; the Rust interop and browser tests spawn the clients through them and fail
#   (never skip) if one is missing.
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

# (c) Chromium for tests/browser.rs (driven by tests/interop/node/browser.js).
chromium="${WSLOOP_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" && "$chromium" == /usr/bin/chromium ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "tests/run.sh: installing Chromium (apt-get install chromium)" >&2
        apt-get update -qq >&2 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 ||
            die "apt-get could not install chromium"
    else
        die "Chromium not found at /usr/bin/chromium: install it (Debian: sudo apt-get install chromium), \
or set WSLOOP_CHROMIUM=/path/to/chromium"
    fi
fi
[[ -x "$chromium" ]] || die "Chromium not found at $chromium (Debian: apt-get install chromium)"

# (d) Tell the Rust tests where the clients are.
export WSLOOP_PYTHON="$venv/bin/python"
export WSLOOP_NODE="$(command -v node)"
export WSLOOP_NODE_CLIENT_DIR="$node_dir"
export WSLOOP_CHROMIUM="$chromium"

# (e) Everything else is cargo's.
exec cargo test "$@"
