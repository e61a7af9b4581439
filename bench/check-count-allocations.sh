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
stop() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir" || true
}
trap stop EXIT
fail() {
    cat "$dir/serve.log" >&2 || true
    echo "check-count-allocations: $1" >&2
    exit 1
}
cd "$dir"
# The embedded SQLite whatever the environment says, a port of its own, and a bound on its life
# so a hang fails CI instead of stalling it.
env -u ZOOMHOOK_DATABASE_URL -u ZOOMHOOK_CONFIG ZOOM_WEBHOOK_SECRET_TOKEN=check \
    ZOOMHOOK_ADMIN_TOKEN=zh_check_admin_token_0123456789 ZOOMHOOK_LOG=info \
    timeout 120 "$bin" serve --listen 127.0.0.1:0 > serve.log 2>&1 &
pid=$!
listen=""
for _ in $(seq 1 300); do
    listen=$(grep -o 'listen=[0-9.:]*' serve.log | head -1 | cut -d= -f2 || true)
    [ -n "$listen" ] && curl -sf --max-time 5 "http://$listen/readyz" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || fail "the server exited"
    sleep 0.1
done
[ -n "$listen" ] || fail "the server did not start listening"
count() { curl -sf --max-time 5 "http://$listen/metrics" | sed -n 's/^zoomhook_allocations_total //p'; }
first=$(count || true)
second=$(count || true)
if ! [[ "$first" =~ ^[0-9]+$ && "$second" =~ ^[0-9]+$ ]] || [ "$second" -le "$first" ] || [ "$first" -eq 0 ]; then
    fail "zoomhook_allocations_total read '$first' then '$second'"
fi
echo "check-count-allocations: zoomhook_allocations_total $first, then $second"
