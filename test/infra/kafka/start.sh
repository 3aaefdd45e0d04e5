#!/usr/bin/env bash
# Start a real single-node Apache Kafka broker (KRaft, broker+controller in one JVM) for tests and CI.
#
#   eval "$(bash test/infra/kafka/start.sh)"     # or: KAFKA_ENV_FILE=/tmp/kafka.env bash test/infra/kafka/start.sh
#   ... tests use $KAFKA_BROKERS ...
#   bash test/infra/kafka/stop.sh
#
# stdout carries only `export NAME=value` lines (safe to eval/source); progress and errors go to stderr.
#
# Environment (all optional):
#   KAFKA_VERSION          broker version from Maven Central (default below; see README.md for why)
#   KAFKA_PORT             PLAINTEXT listener port on 127.0.0.1   (default 9092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener port on 127.0.0.1  (default 9093)
#   KAFKA_ENV_FILE         also write the export lines to this file
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer a metadata request (default 60)
#   KAFKA_HEAP             JVM heap, -Xmx (default 512m)
#   KAFKA_CACHE_DIR        jar cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/webhook-router)
#   KAFKA_OPTS             extra JVM options for the broker (word-split)
#
# Idempotent: the jars are fetched once per version into the cache; when a broker started by this script is
# still running on KAFKA_PORT, its export lines are printed again and nothing new is started.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
cache_root="${KAFKA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/webhook-router}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
# One pointer file per port: lets a second start.sh (or stop.sh) find the broker this script started.
state_file="${TMPDIR:-/tmp}/webhook-router-kafka-$KAFKA_PORT.env"

log() { printf 'kafka: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# True when $1 is a live java process running kafka.Kafka with config under dir $2.
is_our_broker() {
  local pid="$1" dir="$2"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *kafka.Kafka* && "$cmd" == *"$dir/server.properties"* ]]
}
emit_exports() {
  local lines
  lines="export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export KAFKA_PID=$1
export KAFKA_DIR=$2
export KAFKA_VERSION=$3"
  printf '%s\n' "$lines"
  if [ -n "${KAFKA_ENV_FILE:-}" ]; then printf '%s\n' "$lines" >"$KAFKA_ENV_FILE"; fi
}

command -v java >/dev/null || die "java not found on PATH (Java 17+ is needed)"
[[ "$KAFKA_PORT" =~ ^[0-9]+$ && "$KAFKA_CONTROLLER_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_PORT/KAFKA_CONTROLLER_PORT must be numbers"

# ---- 0. Already running? ---------------------------------------------------------------------------------
if [ -f "$state_file" ]; then
  old_pid="$(sed -n 's/^export KAFKA_PID=//p' "$state_file")"
  old_dir="$(sed -n 's/^export KAFKA_DIR=//p' "$state_file")"
  old_ver="$(sed -n 's/^export KAFKA_VERSION=//p' "$state_file")"
  if is_our_broker "$old_pid" "$old_dir" && port_open "$KAFKA_PORT"; then
    if [ "$old_ver" != "$KAFKA_VERSION" ]; then
      die "Kafka $old_ver (pid $old_pid) already runs on port $KAFKA_PORT; run stop.sh first to switch to $KAFKA_VERSION"
    fi
    log "already running: Kafka $old_ver, pid $old_pid, 127.0.0.1:$KAFKA_PORT"
    emit_exports "$old_pid" "$old_dir" "$old_ver"
    exit 0
  fi
  # Dead, half-started or failed broker from an earlier run: stop.sh signals it if it still lives, removes its
  # temp dir and the state file.
  log "cleaning up an earlier run (pid ${old_pid:-none}, not serving on port $KAFKA_PORT)"
  KAFKA_PID="$old_pid" KAFKA_DIR="$old_dir" KAFKA_PORT="$KAFKA_PORT" bash "$here/stop.sh" || true
  rm -f "$state_file"
fi
for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
  if port_open "$p"; then
    die "port 127.0.0.1:$p is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
  fi
done

# ---- 1. Jars (cached per version, outside the repository) --------------------------------------------------
t0="$(now_ms)"
libs_parent="$cache_root/kafka-$KAFKA_VERSION"
libs="$libs_parent/libs"
case "$KAFKA_VERSION" in
  3.*) profile=reload4j ;;   # Kafka 3.x logs through reload4j (log4j 1.x API)
  *)   profile=log4j2 ;;     # Kafka 4.x logs through Log4j 2
esac
mkdir -p "$libs_parent"
# Serialise concurrent starts on one machine while they fill the cache.
if command -v flock >/dev/null; then exec 9>"$libs_parent/.lock"; flock 9; fi
pom_sum="$(sha256sum "$pom" | cut -d' ' -f1)"
marker="$libs_parent/.complete"
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$pom_sum" ] || [ ! -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  command -v mvn >/dev/null || die "mvn not found on PATH (Maven is needed to fetch the Kafka jars)"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $libs"
  rm -rf "$libs.partial"
  if ! mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -P "$profile" \
        -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$libs.partial" >"$libs_parent/mvn.log" 2>&1; then
    tail -n 40 "$libs_parent/mvn.log" >&2
    rm -rf "$libs.partial"
    die "could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (Maven output above, all of it in $libs_parent/mvn.log)"
  fi
  rm -rf "$libs"
  mv "$libs.partial" "$libs"
  printf '%s\n' "$pom_sum" >"$marker"
  log "jars fetched in $(( ($(now_ms) - t0) ))ms"
fi
cp="$libs/*"

# A tiny Java client built on the kafka-clients jar of the broker: DescribeCluster plus a Metadata request
# (listTopics), retried until the remaining time runs out.
cat >"$libs_parent/KafkaReady.java" <<'EOF'
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterResult;

public class KafkaReady {
  public static void main(String[] args) throws Exception {
    long deadline = System.currentTimeMillis() + Long.parseLong(args[1]) * 1000L;
    Properties p = new Properties();
    p.put("bootstrap.servers", args[0]);
    p.put("request.timeout.ms", "3000");
    p.put("default.api.timeout.ms", "5000");
    p.put("retry.backoff.ms", "100");
    Exception last = null;
    try (Admin admin = Admin.create(p)) {
      while (System.currentTimeMillis() < deadline) {
        try {
          DescribeClusterResult c = admin.describeCluster();
          int nodes = c.nodes().get(5, TimeUnit.SECONDS).size();
          String clusterId = c.clusterId().get(5, TimeUnit.SECONDS);
          int topics = admin.listTopics().names().get(5, TimeUnit.SECONDS).size(); // Metadata request
          if (nodes > 0) {
            System.out.println("ready: cluster " + clusterId + ", " + nodes + " node(s), " + topics + " topic(s)");
            return;
          }
        } catch (Exception e) {
          last = e;
        }
        Thread.sleep(200);
      }
    }
    System.out.println("not ready: " + last);
    System.exit(1);
  }
}
EOF
# Compiled once per version into the cache (saves ~1 s per start); single-file source launch without javac.
probe_dir="$libs_parent/ready-probe"
probe_run=(-cp "$cp" "$libs_parent/KafkaReady.java")
if command -v javac >/dev/null; then
  if ! cmp -s "$libs_parent/KafkaReady.java" "$probe_dir/KafkaReady.java" || [ ! -f "$probe_dir/KafkaReady.class" ]; then
    rm -rf "$probe_dir" && mkdir -p "$probe_dir.tmp"
    if javac -nowarn -cp "$cp" -d "$probe_dir.tmp" "$libs_parent/KafkaReady.java" >"$libs_parent/javac.log" 2>&1; then
      cp "$libs_parent/KafkaReady.java" "$probe_dir.tmp/" && mv "$probe_dir.tmp" "$probe_dir"
    else
      rm -rf "$probe_dir.tmp"
    fi
  fi
  if [ -f "$probe_dir/KafkaReady.class" ]; then probe_run=(-cp "$probe_dir:$cp" KafkaReady); fi
fi
exec 9>&-   # release the cache lock

# ---- 2. Config in a fresh temp dir -----------------------------------------------------------------------
dir="$(mktemp -d "${TMPDIR:-/tmp}/webhook-router-kafka.XXXXXX")"
mkdir -p "$dir/data"
server_log="$dir/server.log"
cat >"$dir/server.properties" <<EOF
# Generated by test/infra/kafka/start.sh: single-node KRaft broker+controller for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=true
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
# Both logging back ends write to stdout, which goes to $server_log.
cat >"$dir/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
EOF
cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
EOF
# The storage tool and the readiness probe log warnings and errors only.
sed 's/^log4j.rootLogger=INFO/log4j.rootLogger=WARN/' "$dir/log4j.properties" >"$dir/log4j-quiet.properties"
sed 's/^rootLogger.level = info/rootLogger.level = warn/' "$dir/log4j2.properties" >"$dir/log4j2-quiet.properties"
log_opts=(-Dlog4j.configuration="file:$dir/log4j.properties" -Dlog4j2.configurationFile="$dir/log4j2.properties")
quiet_log_opts=(-Dlog4j.configuration="file:$dir/log4j-quiet.properties" -Dlog4j2.configurationFile="$dir/log4j2-quiet.properties")

pid=""
# On failure: show the logs, stop the broker, and leave the state file behind so that stop.sh (or the next
# start.sh) removes the temp dir; the logs stay there until then.
fail() {
  log "error: $*"
  local f
  for f in "$dir/format.log" "$server_log"; do
    if [ -s "$f" ]; then log "---- last 60 lines of $f ----"; tail -n 60 "$f" >&2; fi
  done
  if [ -s "$dir/ready.log" ]; then log "---- readiness probe ----"; tail -n 20 "$dir/ready.log" >&2; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  printf 'export KAFKA_PID=%s\nexport KAFKA_DIR=%s\nexport KAFKA_VERSION=%s\n' "$pid" "$dir" "$KAFKA_VERSION" >"$state_file"
  exit 1
}

# ---- 3. Format storage -------------------------------------------------------------------------------------
# A cluster id is a Kafka Uuid: 16 random bytes, URL-safe base64 without padding (what `StorageTool random-uuid`
# prints); generating it here saves one JVM start. Kafka's own generator also avoids ids starting with '-'.
cluster_id=""
while [ -z "$cluster_id" ] || [[ "$cluster_id" == -* ]]; do
  cluster_id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
done
t1="$(now_ms)"
if ! java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${quiet_log_opts[@]}" -cp "$cp" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1; then
  fail "storage format failed (config and log in $dir)"
fi
log "storage formatted in $(( $(now_ms) - t1 ))ms (cluster id $cluster_id)"

# ---- 4. Start the broker in the background, in its own session so it outlives this script ------------------
t2="$(now_ms)"
setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/kafka.pid" \
  java -Xmx"$KAFKA_HEAP" -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
  ${KAFKA_OPTS:-} "${log_opts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
  </dev/null >"$server_log" 2>&1 &
for _ in $(seq 50); do [ -s "$dir/kafka.pid" ] && break; sleep 0.1; done
pid="$(cat "$dir/kafka.pid" 2>/dev/null || true)"
[ -n "$pid" ] || fail "broker did not start (no pid)"
# Record it at once: if this script is interrupted while waiting, stop.sh still finds the broker.
printf 'export KAFKA_PID=%s\nexport KAFKA_DIR=%s\nexport KAFKA_VERSION=%s\n' "$pid" "$dir" "$KAFKA_VERSION" >"$state_file"

# ---- 5. Wait: port accepts connections, then a real metadata request succeeds ---------------------------
deadline=$(( $(date +%s) + KAFKA_START_TIMEOUT ))
until port_open "$KAFKA_PORT"; do
  kill -0 "$pid" 2>/dev/null || fail "broker exited during start-up (logs kept in $dir)"
  [ "$(date +%s)" -lt "$deadline" ] || fail "port $KAFKA_PORT not open after ${KAFKA_START_TIMEOUT}s (logs kept in $dir)"
  sleep 0.2
done
t_port="$(now_ms)"
remaining=$(( deadline - $(date +%s) )); [ "$remaining" -ge 5 ] || remaining=5
if ! java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${quiet_log_opts[@]}" "${probe_run[@]}" \
      "127.0.0.1:$KAFKA_PORT" "$remaining" >"$dir/ready.log" 2>&1; then
  fail "broker did not answer a metadata request within ${KAFKA_START_TIMEOUT}s (logs kept in $dir)"
fi
kill -0 "$pid" 2>/dev/null || fail "broker exited during start-up (logs kept in $dir)"
t3="$(now_ms)"
log "Kafka $KAFKA_VERSION up: pid $pid, 127.0.0.1:$KAFKA_PORT, dir $dir; $(grep -m1 '^ready' "$dir/ready.log" || true)"
log "timings: port open $(( t_port - t2 ))ms after launch, metadata ok $(( t3 - t2 ))ms after launch, $(( t3 - t0 ))ms in all"

emit_exports "$pid" "$dir" "$KAFKA_VERSION" | tee "$state_file"
