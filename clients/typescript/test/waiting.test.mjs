// The waiting heartbeat's fallbacks: held heartbeats follow each other
// and carry wait_seconds; a server that answers at once (one before the
// waiting heartbeat) gets one heartbeat per interval, never a tight loop;
// switched off, plain heartbeats an interval apart; and a script that
// starts and ends a session exits at once (nothing keeps it running).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { Client } from '../dist/esm/index.js';
import { Server, measure, sleep } from './helpers.mjs';

/** A proxy in front of the real server recording heartbeats; with `strip` it removes wait_seconds. */
async function relay(upstream, strip = false, refuse = 0) {
  const beats = [];
  let refused = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      let raw = Buffer.concat(chunks);
      if (req.url === '/api/session/heartbeat') {
        const body = JSON.parse(raw.toString());
        beats.push([performance.now(), { ...body }]);
        if (refused < refuse) {
          refused += 1;
          const busy = Buffer.from(JSON.stringify({ error: { code: 'rate_limited', message: 'too many requests; retry in 1 s', retry_after_seconds: 1 } }));
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1', 'content-length': busy.length }).end(busy);
          return;
        }
        if (strip && 'wait_seconds' in body) {
          delete body.wait_seconds;
          raw = Buffer.from(JSON.stringify(body));
        }
      }
      const answer = await fetch(upstream + req.url, { method: req.method, headers: { 'content-type': 'application/json' }, body: raw });
      const out = Buffer.from(await answer.arrayBuffer());
      res.writeHead(answer.status, { 'content-type': 'application/json', 'content-length': out.length }).end(out);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    beats,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

const gaps = (beats) => beats.slice(1).map(([t], i) => t - beats[i][0]);

test('held_heartbeats_follow_each_other_and_carry_wait_seconds', async () => {
  const server = await Server.start({ interval: 2, timeout: 10 });
  const r = await relay(server.url);
  try {
    const a = await new Client(r.url, await server.key(), { timeoutMs: 3000 }).start();
    await sleep(5200);
    await a.end();
    const asking = r.beats.filter(([, b]) => b.wait_seconds === 1).length;
    assert.ok(asking >= r.beats.length - 1, JSON.stringify(r.beats));
    // Held 1 s each and sent again at once: about five in 5 s.
    assert.ok(r.beats.length >= 4 && r.beats.length <= 7, `${r.beats.length}`);
    assert.ok(gaps(r.beats).every((g) => g >= 900 && g < 1600), `${gaps(r.beats)}`);
  } finally {
    await r.close();
    await server.close();
  }
});

test('a_server_answering_at_once_gets_one_heartbeat_per_interval', async () => {
  const server = await Server.start({ interval: 2, timeout: 10 });
  const r = await relay(server.url, true);
  try {
    const a = await new Client(r.url, await server.key(), { timeoutMs: 3000 }).start();
    await sleep(5000);
    assert.equal(a.state, 'active');
    await a.end();
    const t0 = r.beats[0][0];
    measure(`heartbeats in 5 s against a server answering at once (interval 2 s): ${r.beats.map(([t]) => ((t - t0) / 1000).toFixed(2)).join(', ')}`);
    assert.ok(r.beats.length >= 2 && r.beats.length <= 4, `${r.beats.length}`);
    assert.ok(gaps(r.beats).every((g) => g >= 1800), `${gaps(r.beats)}`);
  } finally {
    await r.close();
    await server.close();
  }
});

test('waiting_heartbeats_off_sends_plain_ones_an_interval_apart', async () => {
  const server = await Server.start({ interval: 2, timeout: 6 });
  const r = await relay(server.url);
  try {
    const client = new Client(r.url, await server.key(), { waitingHeartbeats: false });
    const start = performance.now();
    const a = await client.start();
    await sleep(4600);
    await a.end();
    assert.ok(r.beats.every(([, b]) => !('wait_seconds' in b)));
    assert.equal(r.beats.length, 2);
    assert.ok(r.beats[0][0] - start >= 1800, 'the first plain heartbeat waits an interval');
  } finally {
    await r.close();
    await server.close();
  }
});

test('a_script_that_ends_its_session_exits_at_once', async () => {
  const server = await Server.start({ interval: 30, timeout: 60 });
  try {
    const key = await server.key();
    const index = fileURLToPath(new URL('../dist/cjs/index.js', import.meta.url));
    const script = `
      const { Client } = require(${JSON.stringify(index)});
      (async () => {
        const s = await new Client(${JSON.stringify(server.url)}, ${JSON.stringify(key)}).start();
        await new Promise((r) => setTimeout(r, 300));
        console.log(await s.end());
      })();`;
    const t = performance.now();
    const out = await new Promise((resolve, reject) =>
      execFile(process.execPath, ['-e', script], { timeout: 20000 }, (e, stdout) => (e ? reject(e) : resolve(stdout))));
    const took = performance.now() - t;
    measure(`a script that starts a session, ends it and exits ran in ${(took / 1000).toFixed(2)} s (interval 30 s)`);
    assert.equal(out.trim(), 'true');
    assert.ok(took < 5000, `${took}`);
    assert.deepEqual(await server.liveSessions(key), []);
  } finally {
    await server.close();
  }
});

test('a_429_is_retried_after_its_retry_after_within_the_lease', async () => {
  const server = await Server.start({ interval: 1, timeout: 6 });
  const r = await relay(server.url, false, 2);
  try {
    const events = [];
    const a = await new Client(r.url, await server.key(), { onEvent: (e) => events.push(e) }).start();
    const deadline = performance.now() + 8000;
    while (!events.some((e) => e.type === 'recovered') && performance.now() < deadline) await sleep(50);
    const failed = events.filter((e) => e.type === 'heartbeat_failed');
    assert.equal(failed.length, 2, JSON.stringify(events));
    assert.match(failed[0].error, /429 rate_limited/);
    assert.ok(events.some((e) => e.type === 'recovered'));
    // Each retry waited at least the server's Retry-After (1 s).
    assert.ok(gaps(r.beats.slice(0, 3)).every((g) => g >= 990), `${gaps(r.beats)}`);
    assert.equal(a.state, 'active');
    assert.equal(await a.end(), true);
  } finally {
    await r.close();
    await server.close();
  }
});
