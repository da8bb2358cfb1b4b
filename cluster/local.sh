#!/usr/bin/env bash
# A real multi-node Ray cluster on this one machine: a head and worker nodes as separate raylets,
# on 127.0.0.1 only, token authentication on, dashboard at http://127.0.0.1:8265.
#
#   cluster/local.sh up       start it (head + WORKERS worker nodes)
#   cluster/local.sh status   nodes and resources
#   cluster/local.sh down     stop it (only this cluster's processes; other Ray sessions are left alone)
#
# Settings (environment): WORKERS=1  HEAD_CPUS=1  WORKER_CPUS=1  RAY_PORT=6379  DASHBOARD_PORT=8265
#   RAY_TEMP_DIR=/tmp/auttention-ray-$USER   RAY=<the ray command; default: the one next to python>
# Then: auttention-search submit spaces/demo.yaml --address http://127.0.0.1:$DASHBOARD_PORT
set -euo pipefail

WORKERS=${WORKERS:-1}
HEAD_CPUS=${HEAD_CPUS:-1}
WORKER_CPUS=${WORKER_CPUS:-1}
RAY_PORT=${RAY_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
RAY_TEMP_DIR=${RAY_TEMP_DIR:-/tmp/auttention-ray-$(id -un)}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${RAY:-}" ]; then
  if [ -x "$here/.venv/bin/ray" ]; then RAY="$here/.venv/bin/ray"; else RAY=$(command -v ray || true); fi
fi
[ -n "$RAY" ] && [ -x "$RAY" ] || { echo "error: no 'ray' command; run 'make install' (or set RAY=/path/to/ray)" >&2; exit 2; }
# jobs run `python -m search ...` on the head: the python next to this ray, with the package's dependencies
export PATH="$(dirname "$RAY"):$PATH"
# token authentication: every node and client of this machine reads ~/.ray/auth_token
export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0

free_port() {
  # Ray's fixed default ports (dashboard agent 52365, client server 10001) would clash with another
  # Ray on this machine and with each other between our nodes: ask the OS for free ones
  "$(dirname "$RAY")/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
    || python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cluster_pids() {
  # this cluster's Ray processes: their command lines name its temp dir (raylets' workers die with them)
  pgrep -f -- "$RAY_TEMP_DIR" 2>/dev/null || true
}

up() {
  if [ -n "$(cluster_pids)" ]; then
    echo "error: a local cluster is already running in $RAY_TEMP_DIR; '$0 down' first, or '$0 status'" >&2
    exit 2
  fi
  "$RAY" get-auth-token --generate >/dev/null 2>&1
  mkdir -p "$RAY_TEMP_DIR"
  echo "head: 127.0.0.1:$RAY_PORT, $HEAD_CPUS CPU, dashboard http://127.0.0.1:$DASHBOARD_PORT"
  "$RAY" start --head --node-ip-address 127.0.0.1 --port "$RAY_PORT" --num-cpus "$HEAD_CPUS" --num-gpus 0 \
    --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --dashboard-agent-listen-port "$(free_port)" --ray-client-server-port "$(free_port)" \
    --temp-dir "$RAY_TEMP_DIR" --disable-usage-stats >"$RAY_TEMP_DIR/head.log" 2>&1 \
    || { echo "error: the head did not start; see $RAY_TEMP_DIR/head.log" >&2; tail -5 "$RAY_TEMP_DIR/head.log" >&2; down >/dev/null; exit 1; }
  for i in $(seq 1 "$WORKERS"); do
    echo "worker $i: $WORKER_CPUS CPU"
    # each node its own temp dir, as on separate machines (they would otherwise share, and garbage-collect,
    # one runtime_resources folder: a job's unpacked working_dir vanishes under its driver)
    mkdir -p "$RAY_TEMP_DIR/node$i"
    "$RAY" start --address "127.0.0.1:$RAY_PORT" --node-ip-address 127.0.0.1 --num-cpus "$WORKER_CPUS" \
      --num-gpus 0 --temp-dir "$RAY_TEMP_DIR/node$i" --dashboard-agent-listen-port "$(free_port)" --disable-usage-stats >"$RAY_TEMP_DIR/worker$i.log" 2>&1 \
      || { echo "error: worker $i did not start; see $RAY_TEMP_DIR/worker$i.log" >&2; down >/dev/null; exit 1; }
  done
  echo "up: $((WORKERS + 1)) nodes; dashboard http://127.0.0.1:$DASHBOARD_PORT"
  echo "submit: auttention-search submit spaces/demo.yaml --address http://127.0.0.1:$DASHBOARD_PORT"
}

down() {
  local pids
  pids=$(cluster_pids)
  if [ -z "$pids" ]; then echo "down: no local cluster running in $RAY_TEMP_DIR"; return 0; fi
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 20); do
    [ -z "$(cluster_pids)" ] && break
    sleep 0.5
  done
  pids=$(cluster_pids)
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  echo "down: stopped the local cluster in $RAY_TEMP_DIR"
}

status() {
  if [ -z "$(cluster_pids)" ]; then echo "status: no local cluster running in $RAY_TEMP_DIR"; exit 3; fi
  "$RAY" status --address "127.0.0.1:$RAY_PORT"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
