// The client's promises against the real server, named after the shared
// scenarios of docs/clients.md: start/heartbeat/end; a takeover reaches
// the evicted app with the other device's name (within 100 ms with a 30 s
// interval, thanks to the waiting heartbeat); a restart is survived; a
// server gone for good is lost after the lease and not before.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { Client, LostInfo, SessionSuperseded } from '../dist/esm/index.js';
import { Server, measure, sleep, until } from './helpers.mjs';

let shared;
before(async () => {
  shared = await Server.start({ interval: 1, timeout: 3 });
});
after(async () => {
  await shared?.close();
});

test('start_heartbeat_end', async () => {
  const key = await shared.key();
  const session = await new Client(shared.url, key, { deviceName: 'Device A' }).start();
  assert.equal(session.state, 'active');
  assert.equal(session.isUsable, true);
  assert.equal(session.previousSessionTerminated, false);
  assert.equal(session.heartbeatIntervalSeconds, 1);
  assert.equal(session.info.sessionTimeoutSeconds, 3);
  const [live] = await shared.liveSessions(key);
  assert.equal(live.session_id, session.sessionId);
  assert.equal(live.device_name, 'Device A');
  const first = live.last_heartbeat;
  // Heartbeats keep it alive past the 3 s timeout and move last_heartbeat.
  await sleep(3300);
  const [again] = await shared.liveSessions(key);
  assert.equal(again.session_id, session.sessionId);
  assert.ok(again.last_heartbeat > first);
  assert.equal(session.state, 'active');
  assert.ok(session.leaseLeftMs > 1500, `${session.leaseLeftMs}`);
  assert.equal(await session.end(), true);
  assert.equal(session.state, 'ended');
  assert.deepEqual(await shared.liveSessions(key), []);
  assert.equal(await session.end(), false, 'ending twice is harmless');
  assert.equal(await session.whenLost(), null);
});

test('takeover_is_told_with_the_other_device', async () => {
  const key = await shared.key();
  const a = await new Client(shared.url, key, { deviceName: 'Device A' }).start();
  const told = new Promise((resolve) => a.onLost((info) => resolve([performance.now(), info])));
  const sentAt = performance.now();
  const b = await new Client(shared.url, key, { deviceName: 'Device B' }).start();
  assert.equal(b.previousSessionTerminated, true);
  assert.deepEqual(b.info.terminated.map((t) => t.deviceName), ['Device A']);
  assert.equal(b.info.terminated[0].sessionId, a.sessionId);
  assert.equal(b.fence, a.fence + 1);
  const [at, info] = await told;
  measure(`takeover told to device A ${(at - sentAt).toFixed(1)} ms after B's start was sent (interval 1 s)`);
  assert.ok(info instanceof LostInfo);
  assert.equal(info.reason, 'superseded');
  assert.equal(info.deviceName, 'Device B');
  assert.equal(String(info), 'superseded: device "Device B" started with the same access key');
  assert.ok(at - sentAt < 1500);
  assert.equal(a.state, 'lost');
  assert.equal(a.isUsable, false);
  assert.equal((await a.whenLost()).reason, 'superseded');
  // A callback registered after the loss is still called, once.
  const late = await new Promise((resolve) => a.onLost(resolve));
  assert.equal(late.deviceName, 'Device B');
  assert.equal(await a.end(), false, 'ending a superseded session says it was not live');
  assert.equal(a.state, 'lost');
  assert.equal(b.isUsable, true);
  assert.equal(await b.end(), true);
});

test('takeover_is_told_within_100_ms_with_a_30_s_interval', async () => {
  const server = await Server.start({ interval: 30, timeout: 60 });
  try {
    const key = await server.key();
    const a = await new Client(server.url, key, { deviceName: 'Device A' }).start();
    assert.equal(a.heartbeatIntervalSeconds, 30);
    const told = new Promise((resolve) => a.onLost((info) => resolve([performance.now(), info])));
    await sleep(500); // A's first heartbeat goes at once after the start and is held
    assert.equal(a.state, 'active');
    const sentAt = performance.now();
    const b = await new Client(server.url, key, { deviceName: 'Device B' }).start();
    const [at, info] = await told;
    const delay = at - sentAt;
    measure(`takeover told to device A ${delay.toFixed(1)} ms after B's start was sent (interval 30 s, waiting heartbeats)`);
    assert.equal(info.reason, 'superseded');
    assert.equal(info.deviceName, 'Device B');
    assert.ok(delay < 100, `${delay} ms`);
    await b.end();
  } finally {
    await server.close();
  }
});

test('end_is_prompt_while_a_heartbeat_is_held', async () => {
  const server = await Server.start({ interval: 30, timeout: 60 });
  try {
    const key = await server.key();
    const events = [];
    const a = await new Client(server.url, key, { onEvent: (e) => events.push(e) }).start();
    let lost = null;
    a.onLost((info) => { lost = info; });
    await sleep(500); // the first heartbeat is held now
    const t0 = performance.now();
    assert.equal(await a.end(), true);
    const took = performance.now() - t0;
    measure(`end() took ${took.toFixed(1)} ms with a held heartbeat (interval 30 s)`);
    assert.ok(took < 1000, `${took}`);
    await a.stopped;
    assert.equal(a.state, 'ended');
    assert.equal(lost, null);
    assert.deepEqual(events, []);
    assert.deepEqual(await server.liveSessions(key), []);
  } finally {
    await server.close();
  }
});

test('a_restart_is_survived', async () => {
  const server = await Server.start({ interval: 1, timeout: 4 });
  try {
    const key = await server.key();
    const events = [];
    const session = await new Client(server.url, key, { onEvent: (e) => events.push(e) }).start();
    let lost = null;
    session.onLost((info) => { lost = info; });
    await sleep(200);
    const stopped = performance.now();
    assert.equal(await server.stop(), 0, 'SIGTERM stops the server cleanly');
    await until(() => events.some((e) => e.type === 'heartbeat_failed'), 3000, 'a failed heartbeat');
    const failed = events.find((e) => e.type === 'heartbeat_failed');
    assert.ok(failed.leaseLeftMs > 0);
    assert.match(failed.error, /unreachable/);
    assert.equal(session.state, 'retrying');
    assert.equal(session.isUsable, true);
    await sleep(800);
    await server.start(server.port); // same database, same port
    await until(() => events.some((e) => e.type === 'recovered'), 4000, 'recovery');
    const recovered = events.find((e) => e.type === 'recovered');
    measure(`server restart: heartbeats recovered ${((performance.now() - stopped) / 1000).toFixed(2)} s after the stop (${recovered.failedAttempts} failed attempt(s), timeout 4 s)`);
    assert.equal(lost, null);
    assert.equal(session.state, 'active');
    assert.equal(session.failedAttempts, 0);
    assert.deepEqual((await server.liveSessions(key)).map((s) => s.session_id), [session.sessionId]);
    assert.equal(await session.end(), true);
  } finally {
    await server.close();
  }
});

test('a_server_gone_for_good_is_lost_after_the_lease_not_before', async () => {
  const server = await Server.start({ interval: 1, timeout: 3 });
  try {
    const key = await server.key();
    const seen = [];
    let session;
    session = await new Client(server.url, key, {
      onEvent: (e) => seen.push([performance.now(), e, session.isUsable]),
    }).start();
    const told = new Promise((resolve) => session.onLost((info) => resolve([performance.now(), info])));
    await sleep(500);
    const stopped = performance.now();
    await server.stop();
    // An answer that arrived before the exit is read first.
    await sleep(50);
    // No heartbeat can succeed from now on: the lease is fixed.
    const deadline = performance.now() + session.leaseLeftMs;
    assert.ok(deadline - stopped > 3000 - 1000 - 200, 'granted at most one interval before the stop');
    const [lostAt, info] = await told;
    const failures = seen.filter(([, e]) => e.type === 'heartbeat_failed');
    measure(`server gone: lost as unreachable ${((lostAt - stopped) / 1000).toFixed(2)} s after the stop, ${(lostAt - deadline).toFixed(0)} ms from the lease's end, after ${failures.length} retries (timeout 3 s)`);
    for (const [at, , usable] of failures) {
      assert.ok(at < deadline && usable, 'usable until the lease runs out');
    }
    assert.equal(info.reason, 'unreachable');
    assert.equal(info.deviceName, null);
    assert.ok(lostAt >= deadline - 10, `lost ${deadline - lostAt} ms before the lease ran out`);
    assert.ok(lostAt <= deadline + 500, 'promptly after the lease ran out');
    assert.ok(failures.length >= 2, 'retried with backoff while the lease lasted');
    assert.equal(session.state, 'lost');
    const t = performance.now();
    assert.equal(await session.end({ timeoutMs: 1000 }), false, 'never rejects for a lost session');
    assert.ok(performance.now() - t < 1500);
  } finally {
    await server.close();
  }
});

test('an_admin_kick_is_told_as_revoked', async () => {
  const created = await shared.createKey();
  const session = await new Client(shared.url, created.access_key).start();
  const [status] = await shared.call('DELETE', `/api/admin/sessions/${session.sessionId}`, undefined, true);
  assert.ok(status === 200 || status === 204);
  const info = await session.whenLost();
  assert.equal(info.reason, 'revoked');
  assert.equal(String(info), 'revoked by an administrator');
  // A suspended key under a live session: the key is refused.
  const again = await new Client(shared.url, created.access_key).start();
  const [patched] = await shared.call('PATCH', `/api/admin/keys/${created.key_id}`, { status: 'suspended' }, true);
  assert.equal(patched, 200);
  const refused = await again.whenLost();
  assert.ok(['key_refused', 'revoked'].includes(refused.reason), refused.reason);
  assert.equal(await again.end(), false);
});

test('the_low_level_api_throws_the_contracts_errors', async () => {
  const key = await shared.key();
  const client = new Client(shared.url, key, { deviceName: 'low level' });
  const a = await client.start();
  await new Client(shared.url, key, { deviceName: 'taker' }).start().then((b) => b.end());
  await assert.rejects(client.api.heartbeat(key, a.sessionId), (e) => {
    assert.ok(e instanceof SessionSuperseded);
    assert.equal(e.code, 'session_superseded');
    assert.equal(e.status, 409);
    assert.equal(e.deviceName, 'taker');
    return true;
  });
  await a.end();
});
