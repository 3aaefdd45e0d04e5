// kafkajs round trip against the broker from start.sh: proves the client and the broker version work together.
//
//   eval "$(bash test/infra/kafka/start.sh)"
//   node test/infra/kafka/probe.mjs          # kafkajs is resolved from the current directory first, then the repo
//   bash test/infra/kafka/stop.sh
//
// Steps: create a topic with 4 partitions; produce with an idempotent producer (acks=-1) to every partition;
// consume in a consumer group with manual commits; check the committed offsets with the admin client;
// a second consumer in the same group must see nothing left. Exits 1 on any failure, bounded by PROBE_TIMEOUT_MS.
import { createRequire } from 'node:module';
import path from 'node:path';

const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const timeoutMs = Number(process.env.PROBE_TIMEOUT_MS ?? 60000);
const N = Number(process.env.PROBE_MESSAGES ?? 200);
const PARTITIONS = 4;

function loadKafkajs() {
  for (const base of [path.join(process.cwd(), 'x.js'), import.meta.filename]) {
    try {
      return createRequire(base)('kafkajs');
    } catch { /* try next */ }
  }
  throw new Error('kafkajs not found: run from a directory where `npm install kafkajs@2.2.4` was done');
}
const { Kafka, logLevel } = loadKafkajs();
const kafkajsVersion = (() => {
  try {
    const req = createRequire(path.join(process.cwd(), 'x.js'));
    return req('kafkajs/package.json').version;
  } catch { return '?'; }
})();

const timer = setTimeout(() => {
  console.error(`probe: FAILED: timed out after ${timeoutMs}ms`);
  process.exit(1);
}, timeoutMs);
timer.unref();

const t0 = performance.now();
const ms = () => `${Math.round(performance.now() - t0)}ms`;
const step = (msg) => console.log(`probe: [${ms()}] ${msg}`);

const kafka = new Kafka({
  clientId: 'webhook-router-probe',
  brokers,
  logLevel: process.env.PROBE_DEBUG ? logLevel.DEBUG : logLevel.WARN,
  retry: { retries: 5, initialRetryTime: 100 },
});
const topic = `probe-${Date.now()}-${process.pid}`;
const groupId = `${topic}-group`;

const admin = kafka.admin();
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
let consumer;
let exitCode = 0;
try {
  await admin.connect();
  const cluster = await admin.describeCluster();
  step(`kafkajs ${kafkajsVersion} connected to ${brokers.join(',')}: ${cluster.brokers.length} broker(s), controller ${cluster.controller}, cluster ${cluster.clusterId}`);

  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  const parts = meta.topics[0].partitions.length;
  if (!created || parts !== PARTITIONS) throw new Error(`topic ${topic}: created=${created}, ${parts} partitions`);
  step(`created ${topic} with ${parts} partitions`);

  await producer.connect();
  const messages = Array.from({ length: N }, (_, i) => ({
    key: `k${i}`,
    value: JSON.stringify({ i }),
    partition: i % PARTITIONS,
    headers: { 'x-probe': String(i) },
  }));
  const res = await producer.send({ topic, acks: -1, messages });
  step(`produced ${N} messages (idempotent, acks=-1): ${res.map((r) => `p${r.partition}@${r.baseOffset}`).join(' ')}`);

  consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const seen = new Set();
  const perPartition = new Map();
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      const i = JSON.parse(message.value.toString()).i;
      if (message.headers['x-probe']?.toString() !== String(i)) throw new Error(`header mismatch at ${i}`);
      seen.add(i);
      perPartition.set(partition, (perPartition.get(partition) ?? 0) + 1);
      await consumer.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
      if (seen.size === N) resolveDone();
    },
  });
  await done;
  step(`consumed ${seen.size}/${N} in group ${groupId}, per partition ${[...perPartition].sort().map(([p, c]) => `p${p}:${c}`).join(' ')}`);
  await consumer.disconnect();
  consumer = undefined;

  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  const committed = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  if (committed !== N) throw new Error(`committed offsets add up to ${committed}, want ${N}: ${JSON.stringify(offsets)}`);
  step(`committed offsets: ${offsets[0].partitions.map((p) => `p${p.partition}=${p.offset}`).join(' ')}`);

  // A fresh member of the same group must resume after the commits: nothing left to read.
  consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let again = 0;
  const joined = new Promise((r) => consumer.on(consumer.events.GROUP_JOIN, r));
  await consumer.run({ eachMessage: async () => { again++; } });
  await joined;
  await new Promise((r) => setTimeout(r, 1500));
  if (again !== 0) throw new Error(`second consumer re-read ${again} messages`);
  step('second consumer in the group resumed at the committed offsets (0 re-read)');

  await consumer.disconnect();
  consumer = undefined;

  // Two members in one group (JoinGroup/SyncGroup with a rebalance): the 4 partitions are split between them.
  const rbGroup = `${topic}-rb`;
  const members = [0, 1].map(() => kafka.consumer({ groupId: rbGroup, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 500 }));
  const assigned = new Map();
  try {
    for (const [idx, m] of members.entries()) {
      m.on(m.events.GROUP_JOIN, (e) => assigned.set(idx, e.payload.memberAssignment[topic] ?? []));
      await m.connect();
      await m.subscribe({ topics: [topic], fromBeginning: true });
      await m.run({ eachMessage: async () => {} });
    }
    const rbDeadline = Date.now() + 20000;
    const split = () => [...assigned.values()];
    while (Date.now() < rbDeadline &&
      !(assigned.size === 2 && split().every((a) => a.length > 0) && new Set(split().flat()).size === PARTITIONS && split().flat().length === PARTITIONS)) {
      await new Promise((r) => setTimeout(r, 100));
    }
    if (new Set(split().flat()).size !== PARTITIONS || split().some((a) => a.length === 0)) {
      throw new Error(`rebalance: assignments ${JSON.stringify([...assigned])}`);
    }
    step(`rebalance: 2 members split the partitions ${split().map((a) => `[${[...a].sort()}]`).join(' + ')}`);
  } finally {
    await Promise.allSettled(members.map((m) => m.disconnect()));
  }

  // Transactions (EndTxn/AddPartitionsToTxn at kafkajs's old versions): one committed, one aborted batch;
  // a read_committed consumer must see only the committed one.
  const txTopic = `${topic}-tx`;
  await admin.createTopics({ topics: [{ topic: txTopic, numPartitions: PARTITIONS }], waitForLeaders: true });
  const txProducer = kafka.producer({ transactionalId: `${topic}-txid`, idempotent: true, maxInFlightRequests: 1 });
  await txProducer.connect();
  try {
    let tx = await txProducer.transaction();
    await tx.send({ topic: txTopic, messages: Array.from({ length: 10 }, (_, i) => ({ value: `c${i}` })) });
    await tx.commit();
    tx = await txProducer.transaction();
    await tx.send({ topic: txTopic, messages: Array.from({ length: 5 }, (_, i) => ({ value: `a${i}` })) });
    await tx.abort();
    step('transactions: committed 10 records, aborted 5');
  } finally {
    await txProducer.disconnect();
  }
  consumer = kafka.consumer({ groupId: `${txTopic}-group`, readUncommitted: false, sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [txTopic], fromBeginning: true });
  const txSeen = [];
  await consumer.run({ eachMessage: async ({ message }) => { txSeen.push(message.value.toString()); } });
  const txDeadline = Date.now() + 15000;
  while (txSeen.length < 10 && Date.now() < txDeadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1000)); // give aborted records a chance to (wrongly) show up
  await consumer.disconnect();
  consumer = undefined;
  const committedTx = txSeen.filter((v) => v.startsWith('c')).length;
  const abortedTx = txSeen.filter((v) => v.startsWith('a')).length;
  if (committedTx !== 10 || abortedTx !== 0) throw new Error(`transactions: saw ${committedTx}/10 committed, ${abortedTx} aborted`);
  step('transactions: 10 committed records visible, 5 aborted records hidden (read_committed)');

  await admin.deleteTopics({ topics: [topic, txTopic] });
  step('OK');
} catch (err) {
  exitCode = 1;
  console.error(`probe: FAILED after ${ms()}: ${err?.name}: ${err?.message}`);
  if (err?.type) console.error(`probe: kafka error type ${err.type}`);
} finally {
  await Promise.allSettled([consumer?.disconnect(), producer.disconnect(), admin.disconnect()]);
  clearTimeout(timer);
}
process.exit(exitCode);
