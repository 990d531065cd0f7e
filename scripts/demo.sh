#!/usr/bin/env bash
# make demo: start deploy/playground (TiDB, PD and TiKV in one process) as the
# upstream, start `cdc server` on embedded defaults against it, and create the
# seed guide's changefeed with the guide's own command.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN/playground" --data-dir "$work/upstream" > "$work/playground.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  grep -q '^TiKV ' "$work/playground.log" && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/playground.log"; exit 1; }
  sleep 0.2
done
grep '^\(playground\|TiDB\|PD\|TiKV\) ' "$work/playground.log"

"$BIN/cdc" server --pd=http://127.0.0.1:2379 --data-dir "$work/data" --log-file "$work/cdc.log" &
pids+=($!)
for _ in $(seq 1 100); do
  "$BIN/cdc" cli changefeed list --server=http://127.0.0.1:8300 >/dev/null 2>&1 && break
  sleep 0.2
done

cat > "$work/changefeed.conf" <<'CONF'
[sink]
dispatchers = [{matcher = ['*.*'], topic = "tidb_{schema}_{table}", partition="index-value"}]
CONF

set -x
"$BIN/cdc" cli changefeed create --server=http://127.0.0.1:8300 --pd=http://127.0.0.1:2379 \
  --sink-uri="kafka://127.0.0.1:9092/ticdc-meta?protocol=avro&replication-factor=3&enable-tls=true&auto-create-topic=true&sasl-mechanism=plain&sasl-user=K&sasl-password=S" \
  --schema-registry="https://KEY:SECRET@127.0.0.1:8081" \
  --changefeed-id=confluent-changefeed --config "$work/changefeed.conf"
"$BIN/cdc" cli changefeed list --server=http://127.0.0.1:8300
"$BIN/cdc" cli changefeed query -s -c confluent-changefeed --server=http://127.0.0.1:8300
set +x
if [ -t 0 ]; then
  echo "cdc server is running (log: $work/cdc.log). Press Enter to stop."
  read -r _
fi
