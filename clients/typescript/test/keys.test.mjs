// Local checks and bad input: a typo is refused before any request, every
// bad option is a typed ConfigError, refusals carry the contract's codes,
// and nothing ends as an unhandled rejection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';

import * as ks from '../dist/esm/index.js';
import { Server } from './helpers.mjs';

const { Client, ConfigError, InvalidKeyFormat, InvalidKey, KeyRevoked, SeatsFull, ServerUnreachable, InvalidRequest } = ks;

let server;
before(async () => {
  server = await Server.start({ interval: 1, timeout: 3 });
});
after(async () => {
  await server?.close();
});

test('a_typo_is_refused_locally', async () => {
  const key = await server.key();
  assert.equal(ks.isAccessKey(key), true);
  assert.equal(ks.checkAccessKey(`  ${key}\n`), key);
  // Every single-character change of the random part or the checksum fails.
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  for (let i = 3; i < key.length; i++) {
    const c = alphabet[(alphabet.indexOf(key[i]) + 1) % 62];
    assert.equal(ks.isAccessKey(key.slice(0, i) + c + key.slice(i + 1)), false, `position ${i}`);
  }
  // The docs' example key.
  assert.equal(ks.isAccessKey('ks_Rp7Jc4afS8V51Ng4i88Z0Msy6bpALhDm2k5E6F'), true);
  const typo = 'ks_Rp7Jc4afS8V51Ng4i88Z0Msy6bpALhDm2k5E6f';
  // Port 9 (discard): no request could succeed, and none is sent.
  assert.throws(() => new Client('http://127.0.0.1:9', typo), (e) => {
    assert.ok(e instanceof InvalidKeyFormat && e instanceof InvalidKey && e instanceof ks.KeyseatError);
    assert.equal(e.code, 'invalid_key');
    assert.equal(e.status, null);
    assert.equal(e.message, "the access key is not valid: the access key's checksum does not match (is there a typo?)");
    return true;
  });
  assert.throws(() => new Client(server.url, 'ks_short'), /followed by 38 letters and digits/);
  assert.throws(() => new Client(server.url, `${key.slice(0, 10)}-${key.slice(11)}`), /only letters and digits/);
});

test('bad_inputs_are_typed_errors', async () => {
  const key = await server.key();
  const bad = [
    () => new Client('ftp://x', key),
    () => new Client('http://', key),
    () => new Client(42, key),
    () => new Client(server.url, key, { timeoutMs: -1 }),
    () => new Client(server.url, key, { timeoutMs: 'soon' }),
    () => new Client(server.url, key, { deviceName: 7 }),
    () => new Client(server.url, key, { publicKey: 'not a key!' }),
    () => new Client(server.url, key, { publicKey: 'AAAA' }),
    () => new Client(server.url, key, { publicKey: [] }),
    () => new Client(server.url, key, { ca: 'not pem' }),
    () => new Client(server.url, key, { caFile: '/nonexistent/ca.pem' }),
    () => new Client(server.url, key, { onEvent: 'x' }),
    () => new Client(server.url, key, null),
  ];
  for (const make of bad) assert.throws(make, ConfigError, String(make));
  assert.throws(() => new Client(server.url, undefined), InvalidKeyFormat);
  assert.throws(() => new Client(server.url, key, { publicKey: 'AAAA' }), /32/);
  const client = new Client(server.url, key);
  await assert.rejects(client.borrow(1.5), ConfigError);
  await assert.rejects(client.borrow('2'), ConfigError);
  // The server's own refusals of bad values: typed, with the contract's code.
  await assert.rejects(new Client(server.url, key, { deviceName: 'tab\there' }).start(), (e) => {
    assert.ok(e instanceof InvalidRequest);
    assert.equal(e.code, 'invalid_request');
    assert.equal(e.status, 400);
    return true;
  });
  const session = await client.start();
  assert.throws(() => session.onLost('not a function'), ConfigError);
  await assert.rejects(session.borrow(-1), ConfigError);
  await session.end();
  assert.throws(() => ks.verifyLeaseToken('x.y.z', undefined), ConfigError);
  assert.throws(() => ks.verifyLeaseToken(42, server.pinnedKey()), (e) => e.code === 'lease_malformed');
});

test('the_access_key_is_never_shown_whole', async () => {
  const key = await server.key();
  const client = new Client(server.url, key);
  const session = await client.start();
  for (const text of [String(client), inspect(client), JSON.stringify(client), String(session), inspect(session), JSON.stringify(session)]) {
    assert.ok(!text.includes(key.slice(11)), text);
  }
  assert.equal(client.keyPrefix, `${key.slice(0, 11)}\u2026`);
  await session.end();
});

test('refusals_carry_the_contracts_codes', async () => {
  // A key the server does not know (well formed, right checksum).
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  const body = 'ks_' + Array.from({ length: 32 }, (_, i) => alphabet[(i * 7) % 62]).join('');
  const crcKey = body + (await import('../dist/esm/keys.js')).checksumOf(body);
  await assert.rejects(new Client(server.url, crcKey).start(), (e) => e instanceof InvalidKey && e.status === 401 && e.code === 'invalid_key');
  // seats_full on a reject key.
  const reject = await server.key({ on_conflict: 'reject' });
  const first = await new Client(server.url, reject).start();
  await assert.rejects(new Client(server.url, reject).start(), (e) => {
    assert.ok(e instanceof SeatsFull);
    assert.equal(e.code, 'seats_full');
    assert.equal(e.maxSessions, 1);
    return true;
  });
  await first.end();
  // A revoked key.
  const created = await server.createKey();
  await server.call('POST', `/api/admin/keys/${created.key_id}/revoke`, {}, true);
  await assert.rejects(new Client(server.url, created.access_key).start(), KeyRevoked);
  // Nothing answers: unreachable after the start's attempts, same id each time.
  const t = performance.now();
  await assert.rejects(new Client('http://127.0.0.1:9', reject, { startAttempts: 2 }).start(), (e) => {
    assert.ok(e instanceof ServerUnreachable);
    assert.equal(e.transient, true);
    assert.equal(e.code, 'unreachable');
    return true;
  });
  assert.ok(performance.now() - t < 3000);
});

test('the_timing_rules_match_the_other_clients', () => {
  assert.equal(ks.heldFor(30), 25);
  assert.equal(ks.heldFor(2), 1);
  assert.equal(ks.heldFor(1), 0);
  assert.equal(ks.holdFor(30, 60_000, 10_000), 25);
  assert.equal(ks.holdFor(30, 35_000, 10_000), 15);
  assert.equal(ks.holdFor(10, 15_000, 10_000), 0);
  assert.equal(ks.holdFor(2, 10_000, 3_000), 1);
  assert.equal(ks.nextWait(25, 25_000, 30), 0);
  assert.equal(ks.nextWait(25, 40, 30), 30_000);
  assert.equal(ks.nextWait(0, 40, 30), 30_000);
  for (let attempt = 1; attempt < 10; attempt++) {
    const d = ks.backoff(attempt, 8000);
    const exp = Math.min(500 * 2 ** (attempt - 1), 8000);
    assert.ok(d >= exp / 2 && d <= exp, `attempt ${attempt}: ${d}`);
  }
  assert.ok(ks.backoff(1, 8000, 3) >= 3000);
});

test('the_fingerprint_is_a_salted_hash', () => {
  const a = ks.fingerprintOf('app-one', 'machine-1');
  assert.match(a, /^[0-9a-f]{32}$/);
  assert.equal(a, ks.fingerprintOf('app-one', 'machine-1'));
  assert.notEqual(a, ks.fingerprintOf('app-two', 'machine-1'));
  assert.notEqual(a, ks.fingerprintOf('app-one', 'machine-2'));
  // The Rust and Python clients' value for the same input (the first 16
  // bytes of sha256("keyseat-fingerprint-v1\0app-one\0machine-1")).
  assert.equal(a, '33a21275881bd82f47bb2023d4c863c2');
  const fp = ks.machineFingerprint('test');
  if (fp !== null) assert.equal(fp, ks.machineFingerprint('test'));
});
