// Signed answers and borrowing: with the pinned public key every answer
// of the real server is verified; an impostor (unsigned plausible answers,
// a genuine answer replayed for another nonce, one byte changed, a forged
// takeover, a genuine refusal relabelled 200) is refused as untrusted and
// never acted on; a borrow's lease token verifies offline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import * as ks from '../dist/esm/index.js';
import { Server, sleep } from './helpers.mjs';

const { Client, UntrustedAnswer, BorrowNotAllowed, InvalidRequest, InvalidLeaseToken } = ks;

let server;
let publicKey;
before(async () => {
  server = await Server.start({ interval: 1, timeout: 3 });
  publicKey = server.pinnedKey();
});
after(async () => {
  await server?.close();
});

function otherKey() {
  return generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x;
}

/** A tiny HTTP server in front of the real one, answering by `mode` (see the file's comment). */
class Impostor {
  constructor(upstream) {
    this.upstream = upstream;
    this.mode = 'forward';
    this.http = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', async () => {
        const [status, signature, body] = await this.answer(req.url, Buffer.concat(chunks));
        const headers = { 'content-type': 'application/json', 'content-length': body.length };
        if (signature) headers['keyseat-signature'] = signature;
        res.writeHead(status, headers).end(body);
      });
    });
  }
  listen() {
    return new Promise((resolve) => this.http.listen(0, '127.0.0.1', () => {
      this.url = `http://127.0.0.1:${this.http.address().port}`;
      resolve(this);
    }));
  }
  close() {
    this.http.closeAllConnections?.();
    return new Promise((resolve) => this.http.close(resolve));
  }
  async forward(path, raw) {
    const res = await fetch(this.upstream + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw });
    return [res.status, res.headers.get('keyseat-signature'), Buffer.from(await res.arrayBuffer())];
  }
  async answer(path, raw) {
    const mode = this.mode;
    if (mode === 'forward') return this.forward(path, raw);
    const request = JSON.parse(raw.toString());
    if (mode === 'replay') return this.forward(path, JSON.stringify({ ...request, nonce: randomBytes(16).toString('base64url') }));
    if (mode === 'status') {
      const [status, sig, body] = await this.forward(path, raw);
      return [status >= 400 ? 200 : status, sig, body];
    }
    if (mode === 'flip') {
      const [status, sig, body] = await this.forward(path, raw);
      const at = body.findIndex((b) => b >= 0x30 && b <= 0x39);
      body[at] = 0x30 + ((body[at] - 0x30 + 1) % 10); // still valid JSON
      return [status, sig, body];
    }
    const stamp = { nonce: request.nonce, server_time: new Date().toISOString(), key_prefix: String(request.access_key ?? '').slice(0, 11) };
    if (mode === 'superseded' && path.endsWith('/heartbeat')) {
      const error = { code: 'session_superseded', message: 'superseded', superseded_by: { device_name: 'Impostor', started_at: stamp.server_time }, ...stamp };
      return [409, null, Buffer.from(JSON.stringify({ error }))];
    }
    const plausible = {
      '/api/session/start': { session_id: request.session_id, fence: 1, previous_session_terminated: false, terminated_sessions: [], heartbeat_interval_seconds: 1, session_timeout_seconds: 3 },
      '/api/session/heartbeat': { heartbeat_interval_seconds: 1, session_timeout_seconds: 3 },
      '/api/session/end': { ended: true },
      '/api/session/status': { sessions: [] },
    }[path] ?? {};
    return [200, null, Buffer.from(JSON.stringify({ ...plausible, ...stamp }))];
  }
}

test('a_verified_session_starts_heartbeats_and_ends', async () => {
  const key = await server.key();
  const events = [];
  const client = new Client(server.url, key, { publicKey, onEvent: (e) => events.push(e) });
  assert.equal(client.api.verifies, true);
  const session = await client.start();
  await sleep(3300); // past the timeout: every heartbeat was verified and accepted
  assert.equal(session.state, 'active');
  assert.deepEqual(events, []);
  const status = await client.status();
  assert.equal(status.key_prefix, key.slice(0, 11));
  assert.equal(status.nonce.length, 22);
  // A refusal is signed and verified too (its echo inside "error").
  await assert.rejects(client.api.heartbeat(key, '00000000-0000-4000-8000-000000000000'), ks.SessionNotFound);
  // Several keys (a rotation): any may sign; only an unknown one is refused.
  assert.deepEqual((await new Client(server.url, key, { publicKey: [otherKey(), publicKey] }).status()).sessions.length, 1);
  await assert.rejects(new Client(server.url, key, { publicKey: otherKey() }).status(), (e) => e instanceof UntrustedAnswer && e.reason === 'unknown_key' && e.code === 'untrusted');
  assert.equal(await session.end(), true);
});

const REFUSED_AS = { plain: 'unsigned', replay: 'wrong_nonce', flip: 'bad_signature', superseded: 'unsigned', status: 'wrong_status' };

test('an_impostor_is_refused', async () => {
  const key = await server.key();
  const impostor = await new Impostor(server.url).listen();
  try {
    // A start through it: refused as untrusted, whatever the forgery.
    for (const [mode, reason] of Object.entries(REFUSED_AS)) {
      if (mode === 'superseded' || mode === 'status') continue;
      impostor.mode = mode;
      await assert.rejects(new Client(impostor.url, key, { publicKey, startAttempts: 1 }).start(), (e) => {
        assert.ok(e instanceof UntrustedAnswer, `${mode}: ${e}`);
        assert.equal(e.reason, reason, mode);
        assert.equal(e.status, null);
        return true;
      });
    }
    // A running session: a forged takeover is never acted on; only
    // forgeries until the lease runs out lose it as untrusted, not superseded.
    for (const mode of ['superseded', 'plain']) {
      impostor.mode = 'forward';
      const events = [];
      const session = await new Client(impostor.url, key, { publicKey, onEvent: (e) => events.push(e) }).start();
      impostor.mode = mode;
      const info = await session.whenLost();
      assert.equal(info.reason, 'untrusted', `${mode}: ${info}`);
      assert.ok(events.some((e) => e.type === 'heartbeat_failed' && /signature check/.test(e.error)), mode);
      impostor.mode = 'forward';
      await session.end();
    }
    // A genuine refusal relabelled 200 is refused too.
    impostor.mode = 'status';
    await assert.rejects(new Client(impostor.url, key, { publicKey }).api.heartbeat(key, 'no-such-session-0001'), (e) => e instanceof UntrustedAnswer && e.reason === 'wrong_status');
    // Without a pinned key the plain impostor is believed: why pinning matters.
    impostor.mode = 'plain';
    const fooled = await new Client(impostor.url, key).start();
    assert.equal(fooled.fence, 1);
    await fooled.end();
  } finally {
    await impostor.close();
  }
});

test('a_borrow_holds_the_seat_and_its_token_verifies_offline', async () => {
  const key = await server.key({ max_borrow_hours: 4 });
  const client = new Client(server.url, key, { publicKey, deviceName: 'laptop', fingerprint: 'fp-1' });
  const borrowed = await client.borrow(2);
  assert.ok(borrowed.claims !== null, 'checked at once with the pinned key');
  const claims = ks.verifyLeaseToken(borrowed.leaseToken, publicKey);
  assert.equal(claims.iss, 'keyseat');
  assert.equal(claims.sub, borrowed.sessionId);
  assert.equal(claims.key_prefix, key.slice(0, 11));
  assert.equal(claims.fence, borrowed.fence);
  assert.equal(claims.device_fingerprint, 'fp-1');
  assert.ok(Math.abs(claims.exp - (Date.now() / 1000 + 7200)) < 60);
  // Held without heartbeats, past the 3 s timeout, and never superseded.
  await sleep(3300);
  const [live] = await server.liveSessions(key);
  assert.equal(live.session_id, borrowed.sessionId);
  assert.ok(live.borrowed_until);
  await assert.rejects(new Client(server.url, key).start(), ks.SeatsFull);
  // Refused tokens: expired, changed, another key, another algorithm.
  assert.throws(() => ks.verifyLeaseToken(borrowed.leaseToken, publicKey, claims.exp), (e) => e instanceof InvalidLeaseToken && e.reason === 'expired');
  const [h, c, s] = borrowed.leaseToken.split('.');
  const longer = Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 86400 })).toString('base64url');
  assert.throws(() => ks.verifyLeaseToken(`${h}.${longer}.${s}`, publicKey), (e) => e.reason === 'bad_signature');
  assert.throws(() => ks.verifyLeaseToken(borrowed.leaseToken, otherKey()), (e) => e.reason === 'unknown_key');
  const none = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
  assert.throws(() => ks.verifyLeaseToken(`${none}.${c}.`, publicKey), (e) => e.reason === 'wrong_algorithm');
  assert.throws(() => ks.verifyLeaseToken('garbage', publicKey), (e) => e.reason === 'malformed' && e.code === 'lease_malformed');
  // Given back early: the seat is free again.
  assert.equal(await borrowed.giveBack(), true);
  assert.equal(await borrowed.giveBack(), false);
  const after = await new Client(server.url, key, { publicKey }).start();
  // A running session borrowed in place: same id, same fence, heartbeats stop.
  const inPlace = await after.borrow(1);
  assert.equal(inPlace.sessionId, after.sessionId);
  assert.equal(inPlace.fence, after.fence);
  assert.equal(after.state, 'borrowed');
  assert.equal(await after.end(), false, 'end() leaves a borrowed seat borrowed');
  assert.equal(await inPlace.giveBack(), true);
});

test('borrow_refusals_are_typed', async () => {
  const off = await server.key();
  await assert.rejects(new Client(server.url, off).borrow(1), (e) => e instanceof BorrowNotAllowed && e.code === 'borrow_not_allowed' && e.status === 403);
  const on = await server.key({ max_borrow_hours: 2 });
  await assert.rejects(new Client(server.url, on).borrow(3), (e) => e instanceof InvalidRequest && e.status === 400);
  // A refused borrow of a running session leaves it heartbeating.
  const session = await new Client(server.url, on).start();
  await assert.rejects(session.borrow(5), InvalidRequest);
  assert.equal(session.state, 'active');
  assert.equal(await session.end(), true);
});
