// An independent check of keyseat's lease tokens (borrowing for offline
// use) with the npm package `jose` (pinned in package-lock.json; `npm ci`
// here first), sharing no code with the server or the clients:
//
//   (cd clients/node-verify && npm ci)
//   KEYSEAT_URL=http://127.0.0.1:8080 KEYSEAT_KEY=ks_... node clients/node-verify/lease.mjs
//
// The key must allow borrowing (max_borrow_hours >= 1) and have a free
// seat. Borrows it for one hour with a fresh nonce, checks the answer's
// Keyseat-Signature (node:crypto), fetches the JWK set and verifies the
// lease token with jose.jwtVerify (issuer keyseat, EdDSA only): sub,
// key_prefix, fence and exp == borrowed_until; then that the token with a
// changed claim, checked after its exp (currentDate), checked with another
// key, or for another issuer is refused. Gives the seat back at the end.
// Exits 0 when every check passes, 1 otherwise.
import crypto from 'node:crypto';
import * as jose from 'jose';

const base = (process.env.KEYSEAT_URL || '').replace(/\/+$/, '');
const accessKey = process.env.KEYSEAT_KEY || '';
let sessionId = null;
const giveBack = async () => {
  if (sessionId === null) return;
  const id = sessionId;
  sessionId = null;
  try {
    await fetch(`${base}/api/session/end`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ access_key: accessKey, session_id: id }),
    });
  } catch (e) {
    // The failure already reported matters more.
  }
};
const fail = async (msg) => {
  console.error(`lease.mjs: FAIL: ${msg}`);
  await giveBack();
  process.exit(1);
};
if (!base || !accessKey) await fail('set KEYSEAT_URL and KEYSEAT_KEY');

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// `promise` must reject with a jose error of this `code`.
const refused = async (what, promise, code) => {
  try {
    await promise;
  } catch (e) {
    if (e && e.code === code) return;
    await fail(`${what}: expected ${code}, got ${e && (e.code || e.message)}`);
  }
  await fail(`${what}: accepted by jose`);
};

const jwksResponse = await fetch(`${base}/api/signing-keys`);
if (jwksResponse.status !== 200) await fail(`GET /api/signing-keys answered ${jwksResponse.status}`);
const { keys } = await jwksResponse.json();
if (!Array.isArray(keys) || keys.length === 0) await fail('the JWK set lists no key');

// The borrow, its answer signed like every /api/session/* answer.
const nonce = b64url(crypto.randomBytes(16));
const answer = await fetch(`${base}/api/session/borrow`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ access_key: accessKey, hours: 1, nonce, device: { name: 'lease.mjs', fingerprint: 'node-lease' } }),
});
const body = Buffer.from(await answer.arrayBuffer());
const parsed = JSON.parse(body.toString('utf8'));
if (answer.status !== 200) await fail(`the borrow answered ${answer.status}: ${body}`);
sessionId = parsed.session_id;
const header = answer.headers.get('keyseat-signature') || '';
const m = /^kid="([^"]+)",\s*sig="([A-Za-z0-9_-]+)"$/.exec(header.trim());
if (!m) await fail(`the borrow answer is not signed (Keyseat-Signature: ${header})`);
const answerJwk = keys.find((k) => k.kid === m[1]);
if (!answerJwk) await fail(`the borrow answer is signed by kid ${m[1]}, which the JWK set does not list`);
const answerKey = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: answerJwk.x }, format: 'jwk' });
if (!crypto.verify(null, body, answerKey, Buffer.from(m[2], 'base64url'))) await fail('the borrow answer signature does not verify');
if (parsed.nonce !== nonce) await fail('the borrow answer does not echo the nonce');

const token = parsed.lease_token;
if (typeof token !== 'string' || typeof parsed.borrowed_until !== 'string') await fail('no lease_token or borrowed_until');
const { kid, alg, typ } = jose.decodeProtectedHeader(token);
if (alg !== 'EdDSA' || typ !== 'JWT') await fail(`header alg ${alg}, typ ${typ}`);
const jwk = keys.find((k) => k.kid === kid);
if (!jwk) await fail(`the token's kid ${kid} is not in the JWK set`);
const key = await jose.importJWK(jwk, 'EdDSA');
const options = { issuer: 'keyseat', algorithms: ['EdDSA'] };

let verified;
try {
  verified = await jose.jwtVerify(token, key, options);
} catch (e) {
  await fail(`jose refuses the genuine token: ${e.code || ''} ${e.message}`);
}
const claims = verified.payload;
const exp = Math.floor(Date.parse(parsed.borrowed_until) / 1000);
if (claims.sub !== parsed.session_id) await fail(`sub ${claims.sub} is not the session ${parsed.session_id}`);
if (claims.key_prefix !== accessKey.slice(0, 11)) await fail(`key_prefix ${claims.key_prefix} is not this key's`);
if (claims.fence !== parsed.fence) await fail(`fence ${claims.fence} is not the answer's ${parsed.fence}`);
if (claims.exp !== exp) await fail(`exp ${claims.exp} is not borrowed_until ${parsed.borrowed_until} (${exp})`);
if (claims.device_fingerprint !== 'node-lease') await fail(`device_fingerprint ${claims.device_fingerprint}`);
if (!Number.isInteger(claims.iat) || claims.exp - claims.iat < 3590 || claims.exp - claims.iat > 3610) {
  await fail(`iat ${claims.iat} is not an hour before exp ${claims.exp}`);
}

// A changed claim (a longer exp), the signature kept.
const [h, , s] = token.split('.');
const longer = `${h}.${b64url(JSON.stringify({ ...claims, exp: claims.exp + 86400 }))}.${s}`;
await refused('a changed claim', jose.jwtVerify(longer, key, options), 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
// After its exp (a minute before, it is still good).
await jose.jwtVerify(token, key, { ...options, currentDate: new Date((claims.exp - 60) * 1000) })
  .catch((e) => fail(`refused a minute before exp: ${e.code}`));
await refused('after exp', jose.jwtVerify(token, key, { ...options, currentDate: new Date((claims.exp + 60) * 1000) }), 'ERR_JWT_EXPIRED');
// Another key.
const other = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519' });
await refused('another key', jose.jwtVerify(token, other.publicKey, options), 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
const forged = await new jose.SignJWT({ ...claims, exp: claims.exp + 86400 })
  .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'JWT' })
  .sign(other.privateKey);
await refused("another key's signature under the server's kid", jose.jwtVerify(forged, key, options), 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
// Another issuer expected.
await refused('another issuer', jose.jwtVerify(token, key, { ...options, issuer: 'someone-else' }), 'ERR_JWT_CLAIM_VALIDATION_FAILED');

await giveBack();
console.log(`lease.mjs: ok: lease token of session ${claims.sub} (fence ${claims.fence}) verified by jose with kid ${kid} until ${parsed.borrowed_until}; changed, expired and foreign tokens refused`);
