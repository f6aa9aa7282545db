// An independent check of keyseat's signed answers, with Node's built-ins
// only (Node 18+: fetch, node:crypto), sharing no code with the server or
// the clients:
//
//   KEYSEAT_URL=http://127.0.0.1:8080 KEYSEAT_KEY=ks_... node verify.mjs
//
// Fetches the JWK set, checks each kid is the key's RFC 7638 thumbprint,
// sends a status request with a fresh nonce, and verifies the
// Keyseat-Signature over the raw body bytes, the nonce echo and the key
// prefix; also that the same signature fails over a body with one byte
// changed. Exits 0 when every check passes, 1 otherwise. (The lease
// tokens of borrows are checked beside it, with npm's jose: lease.mjs.)
import crypto from 'node:crypto';

const base = (process.env.KEYSEAT_URL || '').replace(/\/+$/, '');
const accessKey = process.env.KEYSEAT_KEY || '';
const fail = (msg) => {
  console.error(`verify.mjs: FAIL: ${msg}`);
  process.exit(1);
};
if (!base || !accessKey) fail('set KEYSEAT_URL and KEYSEAT_KEY');

const b64url = (buf) => Buffer.from(buf).toString('base64url');

const jwksResponse = await fetch(`${base}/api/signing-keys`);
if (jwksResponse.status !== 200) fail(`GET /api/signing-keys answered ${jwksResponse.status}`);
const { keys } = await jwksResponse.json();
if (!Array.isArray(keys) || keys.length === 0) fail('the JWK set lists no key');
for (const jwk of keys) {
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || jwk.use !== 'sig') {
    fail(`unexpected JWK ${JSON.stringify(jwk)}`);
  }
  const canonical = `{"crv":"Ed25519","kty":"OKP","x":"${jwk.x}"}`;
  const thumbprint = b64url(crypto.createHash('sha256').update(canonical).digest());
  if (jwk.kid !== thumbprint) fail(`kid ${jwk.kid} is not the RFC 7638 thumbprint ${thumbprint}`);
}

const nonce = b64url(crypto.randomBytes(16));
const answer = await fetch(`${base}/api/session/status`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ access_key: accessKey, nonce }),
});
const body = Buffer.from(await answer.arrayBuffer());
const header = answer.headers.get('keyseat-signature');
if (!header) fail(`the status answer (${answer.status}) is not signed`);
const m = /^kid="([^"]+)",\s*sig="([A-Za-z0-9_-]+)"$/.exec(header.trim());
if (!m) fail(`malformed Keyseat-Signature: ${header}`);
const [, kid, sigText] = m;
const jwk = keys.find((k) => k.kid === kid);
if (!jwk) fail(`signed by kid ${kid}, which the JWK set does not list`);
const publicKey = crypto.createPublicKey({
  key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x },
  format: 'jwk',
});
const sig = Buffer.from(sigText, 'base64url');
if (sig.length !== 64) fail(`the signature is ${sig.length} bytes, not 64`);
if (!crypto.verify(null, body, publicKey, sig)) fail('the signature does not verify over the body');
const changed = Buffer.from(body);
changed[changed.length - 2] ^= 1;
if (crypto.verify(null, changed, publicKey, sig)) fail('the signature also verifies over a changed body');

const parsed = JSON.parse(body.toString('utf8'));
const fields = parsed.error ?? parsed;
if (fields.nonce !== nonce) fail(`nonce not echoed: sent ${nonce}, got ${fields.nonce}`);
if (fields.key_prefix !== accessKey.slice(0, 11)) fail(`key_prefix ${fields.key_prefix} is not this key's`);
if (typeof fields.server_time !== 'string') fail('no server_time');

console.log(`verify.mjs: ok: status ${answer.status} signed by kid ${kid}, nonce echoed, key prefix ${fields.key_prefix}`);
