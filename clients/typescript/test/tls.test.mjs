// Private-CA TLS the Node way: a TLS front (certificates made with the
// openssl command line) before the real server. Without the `ca` option
// the issuer is named as unknown; with it the session runs; a certificate
// for another name is named as such; a certificate refused mid-session
// loses it at once (not as unreachable a lease later).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Client, CertificateNotTrusted } from '../dist/esm/index.js';
import { Server } from './helpers.mjs';

let dir;
let server;
const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });

/** A CA (`name`.key/.pem) and a server certificate it signs for `san`. */
function makeCa(name) {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`,
    '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`);
}
function makeCert(ca, name, san) {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`,
    '-out', `${name}.csr`, '-subj', `/CN=${name}`);
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  return { key: readFileSync(join(dir, `${name}.key`)), cert: readFileSync(join(dir, `${name}.pem`)) };
}

/** A TLS front piping each connection to the real server. */
async function front(identity) {
  const upstream = new URL(server.url);
  const sockets = new Set();
  const s = tls.createServer(identity, (socket) => {
    const back = net.connect(Number(upstream.port), upstream.hostname);
    sockets.add(socket);
    socket.pipe(back).pipe(socket);
    const drop = () => { socket.destroy(); back.destroy(); sockets.delete(socket); };
    socket.on('error', drop).on('close', drop);
    back.on('error', drop).on('close', drop);
  });
  s.on('tlsClientError', () => {});
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${s.address().port}`,
    swap: (id) => { s.setSecureContext(id); for (const so of sockets) so.destroy(); },
    close: () => new Promise((r) => { for (const so of sockets) so.destroy(); s.close(r); }),
  };
}

let good;
let wrongName;
let stranger;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keyseat-ts-tls-'));
  makeCa('ca');
  makeCa('other-ca');
  good = makeCert('ca', 'good', 'IP:127.0.0.1,DNS:localhost');
  wrongName = makeCert('ca', 'wrong', 'DNS:licenses.example.com');
  stranger = makeCert('other-ca', 'stranger', 'IP:127.0.0.1');
  server = await Server.start({ interval: 1, timeout: 3 });
});
after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a_private_ca_is_trusted_with_the_ca_option', async () => {
  const f = await front(good);
  try {
    const key = await server.key();
    await assert.rejects(new Client(f.url, key).start(), (e) => {
      assert.ok(e instanceof CertificateNotTrusted, String(e));
      assert.equal(e.problem, 'unknown_issuer');
      assert.equal(e.code, 'certificate');
      assert.equal(e.transient, false);
      return true;
    });
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const session = await new Client(f.url, key, { ca }).start();
    assert.equal(session.state, 'active');
    assert.equal(await session.end(), true);
    const viaFile = await new Client(f.url, key, { caFile: join(dir, 'ca.pem') }).start();
    assert.equal(await viaFile.end(), true);
  } finally {
    await f.close();
  }
});

test('a_certificate_for_another_name_is_named', async () => {
  const f = await front(wrongName);
  try {
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    await assert.rejects(new Client(f.url, await server.key(), { ca }).start(), (e) => {
      assert.ok(e instanceof CertificateNotTrusted, String(e));
      assert.equal(e.problem, 'wrong_name');
      assert.deepEqual(e.presented, ['licenses.example.com']);
      assert.match(e.message, /licenses\.example\.com/);
      return true;
    });
  } finally {
    await f.close();
  }
});

test('a_certificate_refused_mid_session_loses_it_at_once', async () => {
  const f = await front(good);
  try {
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const session = await new Client(f.url, await server.key(), { ca }).start();
    const t = performance.now();
    f.swap(stranger);
    const info = await session.whenLost();
    assert.equal(info.reason, 'certificate', String(info));
    assert.match(String(info), /unknown issuer/);
    assert.ok(performance.now() - t < 2500, 'at once, not a lease later');
  } finally {
    await f.close();
  }
});
