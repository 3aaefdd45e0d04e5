#!/usr/bin/env bash
# Stop the Kafka broker started by start.sh and remove its temp dir.
#
#   bash test/infra/kafka/stop.sh
#
# Finds the broker from KAFKA_PID / KAFKA_DIR (as exported by start.sh) or, when they are not set, from the
# state file start.sh keeps per port (KAFKA_PORT, default 9092). Sends SIGTERM (a clean controlled shutdown),
# waits up to KAFKA_STOP_TIMEOUT seconds (default 20), then SIGKILL. Only the PID recorded by start.sh is
# signalled, and only while it still is a kafka.Kafka process using that temp dir.
set -euo pipefail

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-20}"
state_file="${TMPDIR:-/tmp}/webhook-router-kafka-$KAFKA_PORT.env"
log() { printf 'kafka: %s\n' "$*" >&2; }

pid="${KAFKA_PID:-}"
dir="${KAFKA_DIR:-}"
if [ -f "$state_file" ]; then
  [ -n "$pid" ] || pid="$(sed -n 's/^export KAFKA_PID=//p' "$state_file")"
  [ -n "$dir" ] || dir="$(sed -n 's/^export KAFKA_DIR=//p' "$state_file")"
fi
if [ -z "$pid" ] && [ -z "$dir" ]; then
  log "nothing to stop (no KAFKA_PID/KAFKA_DIR and no $state_file)"
  exit 0
fi

is_our_broker() {
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *kafka.Kafka* ]] && { [ -z "$dir" ] || [[ "$cmd" == *"$dir/server.properties"* ]]; }
}

if is_our_broker; then
  kill -TERM "$pid" 2>/dev/null || true
  waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $(( KAFKA_STOP_TIMEOUT * 10 )) ]; do
    sleep 0.1; waited=$(( waited + 1 ))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still running after ${KAFKA_STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  log "stopped broker pid $pid after $(( waited * 100 ))ms"
elif [ -n "$pid" ]; then
  log "pid $pid is not a running broker from start.sh: not signalled"
fi

# Only remove directories that start.sh created.
if [ -n "$dir" ] && [ -d "$dir" ] && [[ "$(basename "$dir")" == webhook-router-kafka.* ]]; then
  rm -rf "$dir"
  log "removed $dir"
fi
# Forget the state file when it describes this broker.
if [ -f "$state_file" ] && grep -qx "export KAFKA_PID=$pid" "$state_file"; then rm -f "$state_file"; fi
