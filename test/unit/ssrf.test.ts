/**
 * SSRF rules (transports/https/ssrf.ts, connector.ts; reliability §3.1): every address form, through the WHATWG URL
 * parser and through an injected resolver, the allowlist rule, and proof at connect time that a blocked destination
 * sees zero connection attempts. No real DNS: every lookup is a fake.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test, type TestContext } from 'node:test';
import { isRouterError } from '../../src/errors.ts';
import { silentLogger } from '../../src/logger.ts';
import { httpsProvider, type HttpsSenderDeps } from '../../transports/https/index.ts';
import { checkUrlForRegistration, classifyAddress, createEgressPolicy, type EgressPolicy, type LookupAll } from '../../transports/https/ssrf.ts';
import type { OutboundMessage, SendOutcome } from '../../transports/port.ts';

type Answer = string | readonly string[] | Error;

/** A fake resolver: host → answer (a function of the call number, for rebinding), counting calls. */
function fakeLookup(table: Record<string, Answer | ((call: number) => Answer)>): LookupAll & { calls: string[] } {
  const calls: string[] = [];
  const counts = new Map<string, number>();
  const fn = async (host: string) => {
    calls.push(host);
    const n = (counts.get(host) ?? 0) + 1;
    counts.set(host, n);
    const entry = table[host];
    const answer = typeof entry === 'function' ? entry(n) : entry;
    if (answer === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    if (answer instanceof Error) throw answer;
    return (typeof answer === 'string' ? [answer] : answer).map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return Object.assign(fn, { calls });
}

const noDns = () => fakeLookup({});
const open = createEgressPolicy([]);

// ---------------------------------------------------------------------------------------------------------------
// Classification of one address

describe('classifyAddress: blocked forms', () => {
  const blocked: [string, string][] = [
    ['127.0.0.1', 'loopback'],
    ['127.1', 'loopback'],
    ['0x7f.1', 'loopback'],
    ['2130706433', 'loopback'],
    ['017700000001', 'loopback'],
    ['0177.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['10.0.0.1', 'private'],
    ['10.255.255.255', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.0.1', 'private'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['100.127.255.255', 'carrierGradeNat'],
    ['169.254.169.254', 'linkLocal'],
    ['169.254.0.1', 'linkLocal'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['198.18.0.1', 'reserved'],
    ['198.19.255.255', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.1', 'reserved'], // TEST-NET-1 (documentation)
    ['198.51.100.1', 'reserved'], // TEST-NET-2
    ['203.0.113.10', 'reserved'], // TEST-NET-3
    ['192.0.0.8', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['[0:0:0:0:0:ffff:127.0.0.1]', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:169.254.169.254', 'linkLocal'],
    ['::7f00:1', 'ipv4Compatible'],
    ['fc00::1', 'uniqueLocal'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['fe80::1', 'linkLocal'],
    ['fe80::1%eth0', 'linkLocal'],
    ['64:ff9b::7f00:1', 'nat64:loopback'],
    ['64:ff9b::a9fe:a9fe', 'nat64:linkLocal'],
    ['64:ff9b:1::1', 'rfc6052'],
    ['2002:7f00:1::', '6to4:loopback'],
    ['2002:a00:1::', '6to4:private'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'], // documentation
    ['2001::1', 'teredo'],
    ['4000::1', 'reserved'], // outside 2000::/3
    ['not-an-ip', 'invalid'],
  ];
  for (const [ip, range] of blocked) {
    test(`${ip} → ${range}`, () => {
      assert.deepEqual({ range: classifyAddress(ip).range, blocked: classifyAddress(ip).blocked }, { range, blocked: true });
    });
  }
});

describe('classifyAddress: public addresses and range edges are allowed', () => {
  for (const ip of [
    '93.184.215.14',
    '8.8.8.8',
    '1.1.1.1',
    '172.15.255.255',
    '172.32.0.0',
    '100.63.255.255',
    '100.128.0.0',
    '198.17.255.255',
    '198.20.0.0',
    '169.253.255.255',
    '223.255.255.255',
    '2606:4700::1111',
    '2a00:1450:4001:80b::200e',
    '64:ff9b::808:808', // NAT64 of 8.8.8.8
    '2002:808:808::1', // 6to4 of 8.8.8.8
    '::ffff:93.184.215.14',
  ]) {
    test(ip, () => assert.equal(classifyAddress(ip).blocked, false, JSON.stringify(classifyAddress(ip))));
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Registration: URL parsing, the resolver, the allowlist

describe('checkUrlForRegistration: literal hosts, as the WHATWG URL parser normalises them', () => {
  const hosts = [
    '127.0.0.1',
    '127.1',
    '0x7f.1',
    '0x7f000001',
    '2130706433',
    '017700000001',
    '0177.0.0.1',
    '0.0.0.0',
    '0',
    '10.0.0.1',
    '172.16.0.1',
    '192.168.1.1',
    '100.64.0.1',
    '169.254.169.254',
    '224.0.0.1',
    '255.255.255.255',
    '198.18.0.1',
    '240.0.0.1',
    '[::1]',
    '[::]',
    '[::ffff:127.0.0.1]',
    '[0:0:0:0:0:ffff:127.0.0.1]',
    '[::ffff:7f00:1]',
    '[fc00::1]',
    '[fd00::1]',
    '[fe80::1]',
    '[64:ff9b::7f00:1]',
    '[2002:7f00:1::]',
    '[ff02::1]',
  ];
  for (const host of hosts) {
    for (const scheme of ['https', 'http']) {
      test(`${scheme}://${host}/ is refused without any DNS lookup`, async () => {
        const lookup = noDns();
        const issues = await checkUrlForRegistration(`${scheme}://${host}:8443/hook`, open, lookup);
        assert.equal(issues.length, 1, JSON.stringify(issues));
        assert.match(issues[0]!, /not allowed by the egress rules/);
        assert.deepEqual(lookup.calls, [], 'literal addresses are never resolved');
      });
    }
  }

  test('public literal addresses are accepted over https, refused over plain http', async () => {
    for (const host of ['93.184.215.14', '[2606:4700::1111]']) {
      assert.deepEqual(await checkUrlForRegistration(`https://${host}/hook`, open, noDns()), []);
      assert.deepEqual(await checkUrlForRegistration(`http://${host}/hook`, open, noDns()), [
        'plain http:// is allowed only for destinations listed in egress.allow',
      ]);
    }
  });

  test('other schemes, credentials and garbage are refused', async () => {
    for (const url of ['file:///etc/passwd', 'gopher://93.184.215.14:70/_x', 'ftp://93.184.215.14/', 'javascript:alert(1)', 'data:text/plain,x']) {
      const issues = await checkUrlForRegistration(url, open, noDns());
      assert.ok(issues.some((i) => /scheme .* is not allowed/.test(i)), `${url}: ${JSON.stringify(issues)}`);
    }
    assert.deepEqual(await checkUrlForRegistration('https://user:pass@93.184.215.14/', open, noDns()), ['url must not contain credentials (user:password@)']);
    assert.deepEqual(await checkUrlForRegistration('not a url', open, noDns()), ['url is not a valid absolute URL']);
  });
});

describe('checkUrlForRegistration: names go through the injected resolver, every address is checked', () => {
  test('a name resolving to a private address is refused; the issue does not echo the address', async () => {
    const issues = await checkUrlForRegistration('https://internal.example/hook', open, fakeLookup({ 'internal.example': '10.0.0.5' }));
    assert.equal(issues.length, 1);
    assert.match(issues[0]!, /private/);
    assert.ok(!issues[0]!.includes('10.0.0.5'), 'the resolved address is not revealed');
  });

  test('one public and one private address → refused (all are checked, not the first)', async () => {
    const lookup = fakeLookup({ 'mixed.example': ['93.184.215.14', '127.0.0.1'] });
    assert.match((await checkUrlForRegistration('https://mixed.example/', open, lookup))[0] ?? '', /loopback/);
  });

  test('IPv4-mapped and NAT64 answers are unwrapped', async () => {
    for (const answer of ['::ffff:10.0.0.1', '64:ff9b::a9fe:a9fe', '::ffff:169.254.169.254']) {
      const issues = await checkUrlForRegistration('https://sneaky.example/', open, fakeLookup({ 'sneaky.example': answer }));
      assert.equal(issues.length, 1, answer);
    }
  });

  test('a resolver failure or an empty answer is refused (fail closed)', async () => {
    const cases: LookupAll[] = [
      fakeLookup({}), // ENOTFOUND
      fakeLookup({ 'x.example': Object.assign(new Error('queryA ETIMEOUT'), { code: 'ETIMEOUT' }) }),
      fakeLookup({ 'x.example': new TypeError('resolver bug') }),
      fakeLookup({ 'x.example': [] }),
    ];
    for (const lookup of cases) {
      assert.deepEqual(await checkUrlForRegistration('https://x.example/', open, lookup), ['the host could not be resolved']);
    }
  });

  test('a name resolving to public addresses only is accepted', async () => {
    const lookup = fakeLookup({ 'hooks.example.com': ['93.184.215.14', '2606:4700::1111'] });
    assert.deepEqual(await checkUrlForRegistration('https://hooks.example.com/x', open, lookup), []);
    assert.deepEqual(lookup.calls, ['hooks.example.com']);
  });
});

describe('the allowlist', () => {
  test('a CIDR entry opens the resolved addresses inside it, and only those', async () => {
    const policy = createEgressPolicy(['10.1.0.0/16']);
    assert.deepEqual(await checkUrlForRegistration('https://a.internal/', policy, fakeLookup({ 'a.internal': '10.1.2.3' })), []);
    assert.equal((await checkUrlForRegistration('https://b.internal/', policy, fakeLookup({ 'b.internal': ['10.1.2.3', '10.2.0.1'] }))).length, 1);
    assert.equal((await checkUrlForRegistration('https://10.2.0.1/', policy, noDns())).length, 1);
    // It never short-circuits: the name is still resolved and checked.
    assert.equal((await checkUrlForRegistration('https://c.internal/', policy, fakeLookup({}))).length, 1);
  });

  test('CIDR entries match IPv4-mapped forms of the same address; a neighbour stays blocked', async () => {
    const policy = createEgressPolicy(['127.0.0.2/32']);
    assert.deepEqual(await checkUrlForRegistration('http://127.0.0.2:8080/', policy, noDns()), []);
    assert.deepEqual(await checkUrlForRegistration('http://[::ffff:127.0.0.2]:8080/', policy, noDns()), []);
    assert.equal((await checkUrlForRegistration('http://127.0.0.1:8080/', policy, noDns())).length, 1);
    assert.equal(policy.checkAddress('::ffff:7f00:2').allowed, true);
  });

  test('a host entry opens that host (any case, trailing dot) but not other names resolving to the same address', async () => {
    const policy = createEgressPolicy(['hooks.corp.example']);
    const lookup = fakeLookup({ 'hooks.corp.example': '192.168.10.20', 'other.corp.example': '192.168.10.20' });
    assert.deepEqual(await checkUrlForRegistration('http://HOOKS.corp.example./x', policy, lookup), []);
    assert.equal((await checkUrlForRegistration('https://other.corp.example/x', policy, lookup)).length, 1);
    assert.equal((await checkUrlForRegistration('https://192.168.10.20/x', policy, lookup)).length, 1);
  });

  test('a host entry never opens link-local (cloud metadata), unspecified, broadcast or multicast answers', async () => {
    const policy = createEgressPolicy(['hooks.corp.example']);
    for (const answer of ['169.254.169.254', 'fe80::1', '0.0.0.0', '255.255.255.255', '224.0.0.1', '::ffff:169.254.169.254']) {
      const issues = await checkUrlForRegistration('https://hooks.corp.example/', policy, fakeLookup({ 'hooks.corp.example': answer }));
      assert.equal(issues.length, 1, answer);
    }
    // An explicit CIDR can, if an operator really means it.
    assert.equal(createEgressPolicy(['169.254.169.254/32']).checkAddress('169.254.169.254').allowed, true);
  });

  test('plain http:// needs an allowlist entry; a public address alone does not qualify', async () => {
    const lookup = fakeLookup({ 'public.example': '93.184.215.14' });
    assert.equal((await checkUrlForRegistration('http://public.example/', open, lookup)).length, 1);
    assert.deepEqual(await checkUrlForRegistration('http://public.example/', createEgressPolicy(['93.184.215.0/24']), lookup), []);
    assert.deepEqual(await checkUrlForRegistration('http://public.example/', createEgressPolicy(['public.example']), lookup), []);
  });

  test('bad entries fail start-up with ROUTER_ERR_CONFIG_INVALID listing every one', () => {
    assert.throws(
      () => createEgressPolicy(['10.0.0.0/8', '10.0.0.0/33', 'not a host', '127.1', '::1/129']),
      (err: unknown) => isRouterError(err, 'ROUTER_ERR_CONFIG_INVALID') && (err.message.match(/egress\.allow entry/g) ?? []).length === 4,
    );
    assert.deepEqual([...createEgressPolicy(['::1/128', 'a.example']).entries], ['::1/128', 'a.example']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Connect time: zero connection attempts to blocked destinations

/** A loopback HTTP server counting accepted TCP connections. */
async function countingServer(t: TestContext): Promise<{ port: number; connections: () => number; paths: string[]; server: Server }> {
  let connections = 0;
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  server.on('connection', () => connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    const closed = once(server, 'close');
    server.close();
    server.closeAllConnections();
    await closed;
  });
  return { port: (server.address() as AddressInfo).port, connections: () => connections, paths, server };
}

const message = (): OutboundMessage => ({
  deliveryId: 'dlv_ssrf',
  attempt: 1,
  eventId: 'evt_ssrf',
  source: 'github',
  routing: { event: 'push' },
  headers: { 'content-type': 'application/json' },
  body: Buffer.from('{"zen":"Keep it logically awesome."}'),
  secrets: { current: `whsec_${Buffer.alloc(32, 7).toString('base64')}` },
});

function deps(egress: EgressPolicy, lookup: LookupAll): HttpsSenderDeps {
  return { logger: silentLogger, now: Date.now, egress, lookup, delivery: { timeoutMs: 5_000, maxResponseBytes: 65_536, connectionsPerOrigin: 2 } };
}

async function sendOnce(t: TestContext, url: string, egress: EgressPolicy, lookup: LookupAll): Promise<SendOutcome> {
  const sender = httpsProvider.createSender(httpsProvider.configSchema.parse({ kind: 'https', url }), deps(egress, lookup));
  t.after(() => sender.close());
  return sender.send(message(), AbortSignal.timeout(5_000));
}

/**
 * After the blocked send, one allowed control request through a permitted path. The server accepts connections in
 * order, so if the blocked send had opened one, the count would be 2 once the control request is in.
 */
async function assertNoConnectionBeforeControl(t: TestContext, srv: { port: number; connections: () => number }): Promise<void> {
  const control = await sendOnce(t, `http://127.0.0.1:${srv.port}/control`, createEgressPolicy(['127.0.0.1/32']), noDns());
  assert.equal(control.kind, 'delivered');
  assert.equal(srv.connections(), 1, 'only the control request connected');
}

const isBlocked = (o: SendOutcome) => o.kind === 'permanent' && o.code === 'ssrf_blocked';

describe('connect time: blocked destinations see zero connection attempts', () => {
  for (const host of ['127.0.0.1', '[::ffff:127.0.0.1]', '[0:0:0:0:0:ffff:7f00:1]']) {
    for (const scheme of ['http', 'https']) {
      test(`${scheme}://${host} with 127.0.0.1 not allowed → permanent ssrf_blocked, 0 connections`, async (t) => {
        const srv = await countingServer(t);
        const lookup = noDns();
        const outcome = await sendOnce(t, `${scheme}://${host}:${srv.port}/hook`, createEgressPolicy(['10.0.0.0/8']), lookup);
        assert.ok(isBlocked(outcome), JSON.stringify(outcome));
        assert.equal(srv.connections(), 0);
        assert.deepEqual(lookup.calls, []);
        await assertNoConnectionBeforeControl(t, srv);
      });
    }
  }

  test('a neighbouring allowlisted address (127.0.0.2/32) does not open 127.0.0.1', async (t) => {
    const srv = await countingServer(t);
    const outcome = await sendOnce(t, `http://127.0.0.1:${srv.port}/`, createEgressPolicy(['127.0.0.2/32']), noDns());
    assert.ok(isBlocked(outcome));
    await assertNoConnectionBeforeControl(t, srv);
  });

  test('a name resolving to 127.0.0.1 → blocked, 0 connections', async (t) => {
    const srv = await countingServer(t);
    const outcome = await sendOnce(t, `https://evil.example:${srv.port}/`, open, fakeLookup({ 'evil.example': '127.0.0.1' }));
    assert.ok(isBlocked(outcome), JSON.stringify(outcome));
    await assertNoConnectionBeforeControl(t, srv);
  });

  test('a name resolving to one public and one loopback address → blocked, 0 connections', async (t) => {
    const srv = await countingServer(t);
    const outcome = await sendOnce(t, `https://mixed.example:${srv.port}/`, open, fakeLookup({ 'mixed.example': ['93.184.215.14', '127.0.0.1'] }));
    assert.ok(isBlocked(outcome));
    await assertNoConnectionBeforeControl(t, srv);
  });

  test('DNS rebinding: public at registration, loopback at delivery → blocked at connect, 0 connections', async (t) => {
    const srv = await countingServer(t);
    const lookup = fakeLookup({ 'rebind.example': (n) => (n === 1 ? '93.184.215.14' : '127.0.0.1') });
    const url = `https://rebind.example:${srv.port}/`;
    assert.deepEqual(await checkUrlForRegistration(url, open, lookup), []);
    assert.ok(isBlocked(await sendOnce(t, url, open, lookup)));
    assert.deepEqual(lookup.calls, ['rebind.example', 'rebind.example']);
    await assertNoConnectionBeforeControl(t, srv);
  });

  test('a resolver failure fails closed: retryable dns_error, 0 connections', async (t) => {
    const srv = await countingServer(t);
    const lookup = fakeLookup({ 'flaky.example': Object.assign(new Error('getaddrinfo EAI_AGAIN flaky.example'), { code: 'EAI_AGAIN' }) });
    const outcome = await sendOnce(t, `https://flaky.example:${srv.port}/`, open, lookup);
    assert.deepEqual([outcome.kind, 'code' in outcome && outcome.code], ['retryable', 'dns_error']);
    await assertNoConnectionBeforeControl(t, srv);
  });

  test('plain http to a public address is refused at connect time too', async (t) => {
    const srv = await countingServer(t);
    const outcome = await sendOnce(t, `http://public.example:${srv.port}/`, open, fakeLookup({ 'public.example': '93.184.215.14' }));
    assert.ok(isBlocked(outcome));
    await assertNoConnectionBeforeControl(t, srv);
  });

  test('allowed names connect to the address that was checked (the name itself is not resolvable by the OS)', async (t) => {
    const srv = await countingServer(t);
    const lookup = fakeLookup({ 'receiver.test': '127.0.0.1' });
    for (const egress of [createEgressPolicy(['127.0.0.1/32']), createEgressPolicy(['receiver.test'])]) {
      const outcome = await sendOnce(t, `http://receiver.test:${srv.port}/ok`, egress, lookup);
      assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
    }
    assert.deepEqual(srv.paths, ['/ok', '/ok']);
  });

  test('a redirect from an allowed receiver is not followed', async (t) => {
    const target = await countingServer(t);
    const srv = await countingServer(t);
    srv.server.removeAllListeners('request');
    srv.server.on('request', (_req, res) => {
      res.writeHead(302, { location: `http://127.0.0.1:${target.port}/internal` });
      res.end();
    });
    const outcome = await sendOnce(t, `http://127.0.0.1:${srv.port}/`, createEgressPolicy(['127.0.0.1/32']), noDns());
    assert.deepEqual([outcome.kind, 'code' in outcome && outcome.code, outcome.status], ['retryable', 'http_3xx', 302]);
    assert.equal(target.connections(), 0);
  });
});

after(async () => {
  // Closed handles leave the list once the loop has run their close callbacks.
  await new Promise((resolve) => setImmediate(resolve));
  const tcp = process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP'));
  assert.deepEqual(tcp, [], 'open TCP handles after all tests');
});
