#!/usr/bin/env bash
# wsloop's public API, one item a line, against the list checked in: tests/public-api.txt.
#
#   bash tests/public_api.sh            check: fails, showing the diff, if the API changed
#   bash tests/public_api.sh --bless    write the list anew (commit it with the change)
#
# A change to the public API is then a change to tests/public-api.txt, seen in review.
# Needs cargo-public-api 0.52.0 (`cargo install cargo-public-api --version 0.52.0 --locked`,
# installed here if missing).
# It reads rustdoc's JSON output, which is unstable: RUSTC_BOOTSTRAP=1 lets the stable
# toolchain's rustdoc write it. cargo-public-api reads one JSON format version (57 for 0.52,
# which rustdoc 1.95 writes); a newer toolchain may need a newer cargo-public-api.
# All features (the Redis relay), without blanket, auto-trait and derived impls (-sss).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
list=tests/public-api.txt

if ! cargo public-api --version >/dev/null 2>&1; then
    cargo install cargo-public-api --version 0.52.0 --locked
fi
RUSTC_BOOTSTRAP=1 cargo rustdoc --lib --all-features --quiet -- \
    -Z unstable-options --output-format json
now="$(cargo public-api -sss --rustdoc-json target/doc/wsloop.json)"

if [[ "${1:-}" == --bless ]]; then
    printf '%s\n' "$now" >"$list"
    echo "tests/public_api.sh: wrote $list"
elif ! diff -u "$list" <(printf '%s\n' "$now"); then
    echo "tests/public_api.sh: the public API changed (above: - was, + is); if that is" \
        "meant, run \`bash tests/public_api.sh --bless\` and commit $list" >&2
    exit 1
fi
