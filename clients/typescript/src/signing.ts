/**
 * Signed answers (docs/api.md, "Signed answers"): the pinned Ed25519
 * public keys, the `Keyseat-Signature` header, and the check a device
 * makes before it acts on an answer. With `node:crypto` only.
 *
 * Why: an app that believes any `200 {"fence": 1}` can be unlocked by a
 * ten-line fake server. With a pinned key every request carries a fresh
 * random nonce, and an answer is acted on only if it is signed by a pinned
 * key over its exact body bytes, its HTTP status agrees with the body, and
 * it echoes that nonce and this key's prefix. The checks and their order
 * are the Rust client's `signing::verify`.
 */

import { createHash, createPublicKey, randomBytes, verify as edVerify, type KeyObject } from 'node:crypto';

import { ConfigError, UntrustedAnswer } from './errors.js';

/** The response header that carries the signature (lower case, as Node gives headers). */
export const SIGNATURE_HEADER = 'keyseat-signature';

const B64URL = /^[A-Za-z0-9_-]*$/;

/** base64url without padding. */
export function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** Decodes strict base64url (no padding, no other characters); `null` when it is not. */
export function unb64url(text: string): Buffer | null {
  if (!B64URL.test(text) || text.length % 4 === 1) return null;
  return Buffer.from(text, 'base64url');
}

/** The key id: the RFC 7638 JWK thumbprint, as the server computes it. */
export function kidOf(publicKey: Uint8Array): string {
  const canonical = `{"crv":"Ed25519","kty":"OKP","x":"${b64url(publicKey)}"}`;
  return b64url(createHash('sha256').update(canonical).digest());
}

/** A public key the app pins: the 43-character text `keyseat signing-key show --pin` prints (a JWK's `x`). */
export class PinnedKey {
  /** The key, base64url. */
  readonly x: string;
  /** Its RFC 7638 thumbprint. */
  readonly kid: string;
  readonly #key: KeyObject;

  constructor(text: unknown) {
    if (typeof text !== 'string') throw new ConfigError('the public key must be a string (base64url)');
    const raw = unb64url(text.trim().replace(/=+$/, ''));
    if (raw === null) {
      throw new ConfigError(
        'the public key is not base64url (the 43-character text `keyseat signing-key show --pin` prints)',
      );
    }
    if (raw.length !== 32) {
      throw new ConfigError(`the public key is ${raw.length} bytes; an Ed25519 public key is 32`);
    }
    this.x = b64url(raw);
    this.kid = kidOf(raw);
    try {
      this.#key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: this.x }, format: 'jwk' });
    } catch {
      throw new ConfigError('the public key is not a valid Ed25519 key');
    }
  }

  /** Whether `signature` is this key's over exactly `body`. */
  verifies(body: Uint8Array, signature: Uint8Array): boolean {
    try {
      return edVerify(null, body, this.#key, signature);
    } catch {
      return false;
    }
  }

  toString(): string {
    return `PinnedKey(${this.kid})`;
  }
}

/** One key or several (during a rotation), as text or already parsed. */
export type PublicKeys = string | PinnedKey | ReadonlyArray<string | PinnedKey>;

/** The keys of a `publicKey` option; `[]` for none. Throws {@link ConfigError} for one that is not a key. */
export function pinnedKeys(publicKey: PublicKeys | null | undefined): PinnedKey[] {
  if (publicKey === undefined || publicKey === null) return [];
  const items = typeof publicKey === 'string' || publicKey instanceof PinnedKey ? [publicKey] : publicKey;
  if (!Array.isArray(items)) throw new ConfigError('publicKey must be a string or an array of strings');
  if (items.length === 0) throw new ConfigError('publicKey is an empty list: pin at least one key');
  return items.map((k) => (k instanceof PinnedKey ? k : new PinnedKey(k)));
}

/** A fresh random nonce for one request (22 base64url characters, 128 bits). */
export function newNonce(): string {
  return b64url(randomBytes(16));
}

/** Splits a `Keyseat-Signature` value (`kid="...", sig="..."`); `null` when malformed. */
export function parseHeader(value: string): { kid: string; sig: Buffer } | null {
  let kid: string | null = null;
  let sig: string | null = null;
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) return null;
    const name = part.slice(0, eq).trim();
    const quoted = part.slice(eq + 1).trim();
    if (quoted.length < 2 || !quoted.startsWith('"') || !quoted.endsWith('"')) return null;
    const inner = quoted.slice(1, -1);
    if (name === 'kid') kid = inner;
    else if (name === 'sig') sig = inner;
  }
  if (kid === null || sig === null) return null;
  const raw = unb64url(sig);
  if (raw === null || raw.length !== 64) return null;
  return { kid, sig: raw };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks an answer the way a device must before it acts on it: signed by
 * one of `pinned` over exactly `body`, its `status` agreeing with the body
 * (an `error` object exactly when not 2xx: the signature covers the body,
 * not the status), and echoing `nonce` and `keyPrefix` (inside `error`
 * for errors). Throws {@link UntrustedAnswer} naming the first check that
 * failed.
 */
export function verifyAnswer(
  pinned: readonly PinnedKey[],
  path: string,
  status: number,
  header: string | undefined,
  body: Uint8Array,
  nonce: string,
  keyPrefix: string | null,
): void {
  if (header === undefined) throw new UntrustedAnswer(path, 'unsigned');
  const parsed = parseHeader(header);
  if (parsed === null) throw new UntrustedAnswer(path, 'malformed');
  const key = pinned.find((p) => p.kid === parsed.kid);
  if (key === undefined) throw new UntrustedAnswer(path, 'unknown_key', `kid ${parsed.kid}`);
  if (!key.verifies(body, parsed.sig)) throw new UntrustedAnswer(path, 'bad_signature');
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw new UntrustedAnswer(path, 'bad_signature');
  }
  const error = isObject(value) && isObject(value['error']) ? value['error'] : null;
  if ((error !== null) === (status >= 200 && status < 300)) {
    throw new UntrustedAnswer(path, 'wrong_status', `status ${status}`);
  }
  const fields = error ?? (isObject(value) ? value : {});
  if (fields['nonce'] !== nonce) throw new UntrustedAnswer(path, 'wrong_nonce');
  const echoed = fields['key_prefix'] ?? null;
  if (echoed !== keyPrefix) throw new UntrustedAnswer(path, 'wrong_key');
}
