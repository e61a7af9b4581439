#!/usr/bin/env bash
# Checks the optional jemalloc build (`--features jemalloc`, docs/deploy.md) the way CI does: it
# must build and run the demo to its end — a server on SQLite fed a signed meeting lifecycle,
# every event answered 200 and the attendance synchronised from them — with jemalloc as the
# allocator. The test suite itself runs the default build; this proves the other one works too.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bin zoomhook --features jemalloc
# Wherever the target directory is (CARGO_TARGET_DIR, build.target-dir), not a stale binary.
target=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/debug/zoomhook
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
# A port of its own, the embedded SQLite whatever the environment says, a fast pace, and a bound
# on the time, so a hang fails CI instead of stalling it.
if ! out=$(env -u ZOOMHOOK_DATABASE_URL -u ZOOMHOOK_CONFIG timeout 300 \
    "$bin" demo --exit --pace 10ms --listen 127.0.0.1:0 2>&1); then
    echo "$out" >&2
    echo "check-jemalloc-build: the demo failed with the jemalloc build" >&2
    exit 1
fi
# The demo prints each answer ("→ 200 accepted seq 7") and the attendance it read back.
answered=$(grep -c '→ 200 ' <<<"$out" || true)
refused=$(grep -c '→ [^2]' <<<"$out" || true)
attendance=$(grep -c 'session(s)' <<<"$out" || true)
if [ "$answered" -eq 0 ] || [ "$refused" -ne 0 ] || [ "$attendance" -eq 0 ]; then
    echo "$out" >&2
    echo "check-jemalloc-build: $answered events answered 200, $refused otherwise, $attendance attendance rows" >&2
    exit 1
fi
# jemalloc's (prefixed) symbols are in the binary only if the feature took effect. grep reads
# all of nm's output (no -q), so nm never dies of a closed pipe under pipefail.
if ! nm "$bin" | grep '_rjem_malloc' >/dev/null; then
    echo "check-jemalloc-build: the binary has no jemalloc in it" >&2
    exit 1
fi
echo "check-jemalloc-build: $answered events answered 200 and $attendance attendance rows, with jemalloc"
