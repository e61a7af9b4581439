#!/usr/bin/env bash
# Checks the `count-allocations` build the way CI does: it builds, serves, and `/metrics` shows
# `zoomhook_allocations_total` growing. bench/deliver's allocations per delivery read that
# counter; the test suite runs the default build, which has no such line.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bin zoomhook --features count-allocations
# Wherever the target directory is (CARGO_TARGET_DIR, build.target-dir), not a stale binary.
target=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/debug/zoomhook
dir=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cd "$dir"
# The embedded SQLite whatever the environment says, a port of its own.
env -u ZOOMHOOK_DATABASE_URL -u ZOOMHOOK_CONFIG ZOOM_WEBHOOK_SECRET_TOKEN=check \
    ZOOMHOOK_ADMIN_TOKEN=zh_check_admin_token_0123456789 ZOOMHOOK_LOG=info \
    "$bin" serve --listen 127.0.0.1:0 > serve.log 2>&1 &
pid=$!
listen=""
for _ in $(seq 1 300); do
    listen=$(grep -o 'listen=[0-9.:]*' serve.log | head -1 | cut -d= -f2 || true)
    [ -n "$listen" ] && curl -sf "http://$listen/readyz" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$listen" ]; then
    cat serve.log >&2
    echo "check-count-allocations: the server did not start" >&2
    exit 1
fi
count() { curl -sf "http://$listen/metrics" | sed -n 's/^zoomhook_allocations_total //p'; }
first=$(count)
second=$(count)
if ! [[ "$first" =~ ^[0-9]+$ && "$second" =~ ^[0-9]+$ ]] || [ "$second" -le "$first" ] || [ "$first" -eq 0 ]; then
    echo "check-count-allocations: zoomhook_allocations_total read '$first' then '$second'" >&2
    exit 1
fi
echo "check-count-allocations: zoomhook_allocations_total $first, then $second"
