/**
 * Borrowing a seat for offline use (docs/api.md, "Borrowing"): a device
 * that is online asks for its seat for some hours, keeps the lease token
 * the server hands out, and at a later start without the network checks
 * that token with the pinned public key ({@link verifyLeaseToken})
 * instead of asking the server.
 *
 * The token is a compact JWS (RFC 7515), `alg` `EdDSA`, signed by the key
 * that signs answers; its claims are `iss` (`keyseat`), `sub` (the session
 * id), `key_prefix`, `fence`, `device_fingerprint` (when the borrow gave
 * one), `iat` and `exp` (Unix seconds). The checks and their order are the
 * Rust client's `verify_lease_token`.
 */

import type { Api, Answer } from './api.js';
import { ConfigError, InvalidLeaseToken, KeyRefused, ServerUnreachable, SessionGone } from './errors.js';
import { pinnedKeys, unb64url, type PinnedKey, type PublicKeys } from './signing.js';
import type { StartInfo } from './session.js';

/** The issuer every lease token names. */
export const ISSUER = 'keyseat';

/** What a verified lease token says: session `sub` of the key `key_prefix` holds its seat offline until `exp`. */
export interface LeaseClaims {
  iss: string;
  /** The session id. */
  sub: string;
  /** The key's display prefix (`ks_` and 8 characters): check it is your key's. */
  key_prefix: string;
  fence: number;
  /** The device's fingerprint, when the borrow gave one. */
  device_fingerprint?: string;
  /** Issued at (Unix seconds). */
  iat: number;
  /** The end of the borrow (Unix seconds). */
  exp: number;
}

function jsonPart(text: string): Record<string, unknown> {
  const raw = unb64url(text);
  let value: unknown;
  try {
    value = raw === null ? null : JSON.parse(raw.toString('utf8'));
  } catch {
    value = null;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidLeaseToken('malformed');
  return value as Record<string, unknown>;
}

function claimsOf(v: Record<string, unknown>): LeaseClaims {
  const bad = (name: string) => new InvalidLeaseToken('malformed', `claim ${name} is missing or of the wrong type`);
  for (const name of ['iss', 'sub', 'key_prefix']) if (typeof v[name] !== 'string') throw bad(name);
  for (const name of ['fence', 'iat', 'exp']) if (!Number.isInteger(v[name])) throw bad(name);
  const fp = v['device_fingerprint'];
  if (fp !== undefined && fp !== null && typeof fp !== 'string') throw bad('device_fingerprint');
  const claims: LeaseClaims = {
    iss: v['iss'] as string,
    sub: v['sub'] as string,
    key_prefix: v['key_prefix'] as string,
    fence: v['fence'] as number,
    iat: v['iat'] as number,
    exp: v['exp'] as number,
  };
  if (typeof fp === 'string') claims.device_fingerprint = fp;
  return claims;
}

/** The checks, in order; `nowSeconds` null skips the expiry (right after a borrow, where the local clock may be off). */
function check(token: unknown, pinned: readonly PinnedKey[], nowSeconds: number | null): LeaseClaims {
  if (typeof token !== 'string') throw new InvalidLeaseToken('malformed', 'the token is not a string');
  const parts = token.trim().split('.');
  if (parts.length !== 3) throw new InvalidLeaseToken('malformed');
  const [h, c, s] = parts as [string, string, string];
  const header = jsonPart(h);
  if (header['alg'] !== 'EdDSA') throw new InvalidLeaseToken('wrong_algorithm', `alg ${JSON.stringify(header['alg'])}`);
  const kid = header['kid'];
  const key = pinned.find((p) => typeof kid === 'string' && p.kid === kid);
  if (key === undefined) throw new InvalidLeaseToken('unknown_key', `kid ${String(kid)}`);
  const sig = unb64url(s);
  if (sig === null) throw new InvalidLeaseToken('malformed', 'the signature is not base64url');
  if (sig.length !== 64) throw new InvalidLeaseToken('malformed', `the signature is ${sig.length} bytes, not 64`);
  if (!key.verifies(Buffer.from(`${h}.${c}`, 'ascii'), sig)) throw new InvalidLeaseToken('bad_signature');
  const claims = claimsOf(jsonPart(c));
  if (claims.iss !== ISSUER) throw new InvalidLeaseToken('wrong_issuer', `iss ${JSON.stringify(claims.iss)}`);
  if (nowSeconds !== null && nowSeconds >= claims.exp) {
    throw new InvalidLeaseToken('expired', `exp ${new Date(claims.exp * 1000).toISOString()}`);
  }
  return claims;
}

/**
 * Checks a lease token offline, the way an app must before it runs on it:
 * `alg` EdDSA, a `kid` naming a pinned key, that key's signature over the
 * first two parts, `iss` `keyseat`, and `exp` after `now` (a Date or Unix
 * seconds; default this machine's clock). Returns the claims: check that
 * `key_prefix` (and `device_fingerprint`, if you borrowed with one) is
 * this app's. Throws {@link InvalidLeaseToken} (`reason`) or
 * {@link ConfigError} for an unusable public key.
 */
export function verifyLeaseToken(token: string, publicKey: PublicKeys, now?: Date | number): LeaseClaims {
  if (publicKey === undefined || publicKey === null) throw new ConfigError('verifyLeaseToken needs the pinned public key');
  let nowSeconds: number;
  if (now === undefined) nowSeconds = Date.now() / 1000;
  else if (now instanceof Date) nowSeconds = now.getTime() / 1000;
  else if (typeof now === 'number' && Number.isFinite(now)) nowSeconds = now;
  else throw new ConfigError('now must be a Date or Unix seconds');
  return check(token, pinnedKeys(publicKey), nowSeconds);
}

/**
 * A seat held offline, from `Client.borrow()` or `Session.borrow()`: no
 * heartbeats until `borrowedUntil`. Store `leaseToken` and check it
 * offline with {@link verifyLeaseToken}; `giveBack()` returns the seat
 * early.
 */
export class Borrowed {
  readonly #api: Api;
  readonly #accessKey: string;
  /** The session fields of the answer, as a start gives them. */
  readonly info: StartInfo;
  /** Until when the seat is held (RFC 3339, server time). */
  readonly borrowedUntil: string;
  /** The compact JWS to keep and check offline. */
  readonly leaseToken: string;
  /** The token's claims when the client pins a public key (it then checked the token, bar its expiry). */
  readonly claims: LeaseClaims | null;

  /** @internal */
  constructor(api: Api, accessKey: string, info: StartInfo, borrowedUntil: string, leaseToken: string, claims: LeaseClaims | null) {
    this.#api = api;
    this.#accessKey = accessKey;
    this.info = info;
    this.borrowedUntil = borrowedUntil;
    this.leaseToken = leaseToken;
    this.claims = claims;
  }

  get sessionId(): string {
    return this.info.sessionId;
  }
  get fence(): number {
    return this.info.fence;
  }

  /**
   * Returns the seat early (`/api/session/end`); `true` if the server still
   * held it. The token still verifies offline until its `exp`: delete your
   * copy.
   */
  async giveBack(options: { timeoutMs?: number } = {}): Promise<boolean> {
    try {
      const body = await this.#api.end(this.#accessKey, this.info.sessionId, options);
      return body['ended'] === true;
    } catch (e) {
      if (e instanceof SessionGone || e instanceof KeyRefused) return false;
      throw e;
    }
  }

  toJSON(): Record<string, unknown> {
    return { sessionId: this.sessionId, fence: this.fence, borrowedUntil: this.borrowedUntil };
  }
}

/** A borrow's answer; with pinned keys the token is checked too (bar its expiry) and must be for the session the answer names. */
export function borrowedFrom(api: Api, accessKey: string, body: Answer, info: StartInfo): Borrowed {
  const until = body['borrowed_until'];
  const token = body['lease_token'];
  if (typeof until !== 'string') throw new ServerUnreachable("the server's borrow answer lacks borrowed_until");
  if (typeof token !== 'string') throw new ServerUnreachable("the server's borrow answer lacks lease_token");
  let claims: LeaseClaims | null = null;
  if (api.verifies) {
    claims = check(token, api.pinned, null);
    if (claims.sub !== info.sessionId || claims.fence !== info.fence) {
      throw new InvalidLeaseToken(
        'malformed',
        `the token is for session ${claims.sub} (fence ${claims.fence}), not the borrowed ${info.sessionId} (fence ${info.fence})`,
      );
    }
  }
  return new Borrowed(api, accessKey, info, until, token, claims);
}
