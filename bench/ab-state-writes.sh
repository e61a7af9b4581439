#!/usr/bin/env bash
# usage: bench/ab-state-writes.sh BIN LABEL [RATE]
# What the whole product writes per event at a steady rate (default 1,000 events/s): `BIN serve` on
# a fresh SQLite directory with one subscription (all events) to a local sink (examples/bare_ok,
# built by `cargo build --release --example bare_ok`), then 10 s of `zoomhook simulate --rate`.
# Prints the bytes the server wrote to disk per event (/proc/PID/io write_bytes: both WALs and the
# checkpoints into both database files), the state database's WAL restarts (each holds its writers
# back: the tail of the ingest→delivery delay), events delivered, and the simulator's p99.
# Interleave two builds (A B A B …) to compare them.
set -u
BIN=$(realpath "$1"); LABEL=$2; RATE=${3:-1000}
SINK=$(realpath "$(dirname "$0")/../target/release/examples/bare_ok")
D=$(mktemp -d)
cd "$D"
"$SINK" 127.0.0.1:18200 > /dev/null 2>&1 &
SINK_PID=$!
export ZOOMHOOK_TOKEN=zh_admin_for_bench_000000000000
ZOOM_WEBHOOK_SECRET_TOKEN=abc ZOOMHOOK_ADMIN_TOKEN=$ZOOMHOOK_TOKEN ZOOMHOOK_LOG=warn \
  ZOOMHOOK_DELIVERY_ALLOW_CIDRS=127.0.0.1/32 "$BIN" serve --listen 127.0.0.1:18099 > serve.log 2>&1 &
PID=$!
for i in $(seq 1 100); do curl -sf 127.0.0.1:18099/readyz >/dev/null && break; sleep 0.1; done
"$BIN" subs add --server http://127.0.0.1:18099 --url http://127.0.0.1:18200/hook --events '*' > /dev/null
W0=$(awk '/^write_bytes/ {print $2}' /proc/$PID/io)
"$BIN" simulate --server http://127.0.0.1:18099 --secret abc --rate "$RATE" --duration 10s --json --quiet > sim.json 2>/dev/null
sleep 1
W1=$(awk '/^write_bytes/ {print $2}' /proc/$PID/io)
METRICS=$(curl -s 127.0.0.1:18099/metrics)
RESTARTS=$(echo "$METRICS" | grep '^zoomhook_sqlite_wal_restarts_total{.*file="state"' | awk '{s+=$2} END {print s+0}')
DELIVERED=$(echo "$METRICS" | grep '^zoomhook_deliveries_total{' | awk '{s+=$2} END {print s+0}')
kill $PID $SINK_PID; wait $PID $SINK_PID 2>/dev/null
python3 - "$LABEL" "$((W1-W0))" "$RESTARTS" "$DELIVERED" <<'PY'
import json, sys
label, written, restarts, delivered = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
d = json.load(open("sim.json"))
n = d.get("accepted") or 0
print(f"{label} events={n} bytes_per_event={written / max(n, 1):.0f} state_wal_restarts={restarts} delivered={delivered} ingest_p99_ms={d['p99_ms']:.2f}")
PY
cd /; rm -rf "$D"
