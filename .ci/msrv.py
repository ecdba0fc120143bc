"""Fails when a runtime dependency declares a rust-version above wsloop's own.

Reads `cargo metadata` (default features) on stdin and follows normal and build dependencies
from wsloop. Language features newer than rust-version are not checked here; std APIs are, by
clippy's incompatible_msrv lint in the clippy step.
"""
import json
import sys

meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p["id"] for p in meta["packages"] if p["name"] == "wsloop")


def version(text):
    return tuple(int(x) for x in (text.split(".") + ["0", "0"])[:3])


msrv = packages[root]["rust_version"]
seen, todo, bad = set(), [root], []
while todo:
    node = todo.pop()
    if node in seen:
        continue
    seen.add(node)
    need = packages[node]["rust_version"]
    if need and version(need) > version(msrv):
        bad.append(f"{packages[node]['name']} {packages[node]['version']} needs {need}")
    for dep in nodes[node]["deps"]:
        if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
            todo.append(dep["pkg"])
print(f"rust-version {msrv}: {len(seen) - 1} runtime dependencies checked")
if bad:
    sys.exit("needs a newer Rust than rust-version: " + ", ".join(sorted(bad)))
