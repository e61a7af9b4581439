#!/usr/bin/env bash
# usage: bench/ab-pg-ingest.sh BIN LABEL
# 10 s of `zoomhook simulate` (64 connections, flat out) against `BIN serve` on a fresh PostgreSQL
# database (created and dropped here; server at 127.0.0.1:5432, user postgres). Prints req/s, p50/p99,
# how busy the machine was and the sync lag when the flood ends. Interleave two builds (A B A B …).
set -u
BIN=$(realpath "$1"); LABEL=$2
DB=zh_ab_$$_$RANDOM
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" postgres
D=$(mktemp -d); cd "$D"
ZOOM_WEBHOOK_SECRET_TOKEN=abc ZOOMHOOK_ADMIN_TOKEN=zh_admin_for_bench_000000000000 ZOOMHOOK_LOG=warn \
  "$BIN" serve --listen 127.0.0.1:18098 --database postgres://postgres@127.0.0.1:5432/$DB > serve.log 2>&1 &
PID=$!
for i in $(seq 1 100); do curl -sf 127.0.0.1:18098/readyz >/dev/null && break; sleep 0.1; done
S0=($(head -1 /proc/stat))
"$BIN" simulate --server http://127.0.0.1:18098 --secret abc --duration 10s --json --quiet > sim.json 2>/dev/null
S1=($(head -1 /proc/stat))
tot=0; for j in 1 2 3 4 5 6 7 8; do tot=$((tot + S1[j] - S0[j])); done; idle=$((S1[4]-S0[4]+S1[5]-S0[5]))
LAG=$(curl -s 127.0.0.1:18098/metrics | grep -E '^zoomhook_sync_lag_events ' | awk '{print $2}')
kill $PID; wait $PID 2>/dev/null
echo "$LABEL $(python3 -c 'import json; d=json.load(open("sim.json")); print("rps=%.0f p50=%.2f p99=%.2f" % (d["events_per_sec"], d["p50_ms"], d["p99_ms"]))') busy=$(( (tot-idle)*100/tot ))% sync_lag=$LAG"
cd /; rm -rf "$D"; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $DB WITH (FORCE)" postgres
