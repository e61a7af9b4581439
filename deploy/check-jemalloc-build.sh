#!/usr/bin/env bash
# Checks the optional jemalloc build (`--features jemalloc`, docs/deploy.md) the way CI does: it
# must build and run the demo to its end — a server on SQLite fed a signed meeting lifecycle,
# answered and queried — with jemalloc as the allocator. The test suite itself runs the default
# build; this only proves the other one starts, works and stops cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bin zoomhook --features jemalloc
bin=$PWD/target/debug/zoomhook
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
# A port of its own, so a server already on the default one does not matter; a fast pace.
if ! out=$("$bin" demo --exit --pace 10ms --listen 127.0.0.1:0 2>&1); then
    echo "$out" >&2
    echo "check-jemalloc-build: the demo failed with the jemalloc build" >&2
    exit 1
fi
# jemalloc's (prefixed) symbols are in the binary only if the feature took effect. grep reads
# all of nm's output (no -q), so nm never dies of a closed pipe under pipefail.
if ! nm "$bin" | grep '_rjem_malloc' >/dev/null; then
    echo "check-jemalloc-build: the binary has no jemalloc in it" >&2
    exit 1
fi
echo "check-jemalloc-build: the demo ran to its end with jemalloc"
