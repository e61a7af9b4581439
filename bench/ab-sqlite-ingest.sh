#!/usr/bin/env bash
# usage: bench/ab-sqlite-ingest.sh BIN LABEL
# 10 s of `zoomhook simulate` (64 connections, flat out) against `BIN serve` on a fresh SQLite
# directory. Prints req/s, p50/p99, the server's CPU ticks (1/100 s) and the simulator's CPU seconds,
# the server's peak RSS (VmHWM, kB) and the sync and indexer lag at the end. Interleave two builds
# (A B A B …) to compare them: this VM's speed drifts by ±15 % within minutes.
set -u
BIN=$(realpath "$1"); LABEL=$2
D=$(mktemp -d)
cd "$D"
ZOOM_WEBHOOK_SECRET_TOKEN=abc ZOOMHOOK_ADMIN_TOKEN=zh_admin_for_bench_000000000000 ZOOMHOOK_LOG=warn \
  "$BIN" serve --listen 127.0.0.1:18099 > serve.log 2>&1 &
PID=$!
for i in $(seq 1 100); do curl -sf 127.0.0.1:18099/readyz >/dev/null && break; sleep 0.1; done
T0=$(awk '{print $14+$15}' /proc/$PID/stat)
/usr/bin/time -f "%U %S" -o sim-time.txt \
  "$BIN" simulate --server http://127.0.0.1:18099 --secret abc --duration 10s --json --quiet > sim.json 2>/dev/null
T1=$(awk '{print $14+$15}' /proc/$PID/stat)
LAG=$(curl -s 127.0.0.1:18099/metrics | grep -E '^zoomhook_(sync_lag_events|sqlite_index_lag_events) ' \
  | sed 's/^zoomhook_//; s/_events / /' | sort | awk '{printf "%s=%s ", $1, $2}')
HWM=$(grep VmHWM /proc/$PID/status | awk '{print $2}')
kill $PID; wait $PID 2>/dev/null
echo "$LABEL $(python3 -c 'import json; d=json.load(open("sim.json")); print("rps=%.0f p50=%.2f p99=%.2f" % (d["events_per_sec"], d["p50_ms"], d["p99_ms"]))' 2>/dev/null || head -c 300 sim.json) server_cpu_ticks=$((T1-T0)) simulate_cpu_s=$(awk '{print $1+$2}' sim-time.txt) hwm_kb=$HWM $LAG"
cd /; rm -rf "$D"
