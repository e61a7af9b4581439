#!/usr/bin/env bash
# usage: bench/ab-sqlite-ingest.sh BIN LABEL  — 10 s of simulate (64 conns, flat out) against serve on a fresh SQLite dir
set -u
BIN=$1; LABEL=$2
D=$(mktemp -d)
cd "$D"
ZOOM_WEBHOOK_SECRET_TOKEN=abc ZOOMHOOK_ADMIN_TOKEN=zh_admin_for_bench_000000000000 ZOOMHOOK_LOG=warn \
  "$BIN" serve --listen 127.0.0.1:18099 > serve.log 2>&1 &
PID=$!
for i in $(seq 1 100); do curl -sf 127.0.0.1:18099/readyz >/dev/null && break; sleep 0.1; done
T0=$(awk '{print $14+$15}' /proc/$PID/stat)
OUT=$("$BIN" simulate --server http://127.0.0.1:18099 --secret abc --duration 10s --json --quiet 2>/dev/null)
T1=$(awk '{print $14+$15}' /proc/$PID/stat)
HWM=$(grep VmHWM /proc/$PID/status | awk '{print $2}')
kill $PID; wait $PID 2>/dev/null
echo "$LABEL $(echo "$OUT" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("rps=%.0f p50=%.2f p99=%.2f" % (d["events_per_sec"], d.get("p50_ms",0), d.get("p99_ms",0)))' 2>/dev/null || echo "$OUT" | head -c 300) cpu_ticks=$((T1-T0)) hwm_kb=$HWM"
rm -rf "$D"
