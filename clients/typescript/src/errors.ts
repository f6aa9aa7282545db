/**
 * Errors, one class per error code of the keyseat wire contract
 * (docs/api.md, "Errors"). Every one is a {@link KeyseatError} carrying
 *
 * - `code`: the contract's snake_case code (`invalid_key`, `seats_full`,
 *   ...), `unreachable` when no answer came, `untrusted` for an answer that
 *   failed the signature check, `certificate` for a refused TLS
 *   certificate, `config` for an unusable setting, or `http_<status>` when
 *   the answer was not the contract's error shape (a proxy's 502 page);
 * - `status`: the HTTP status, or `null` when nothing (believable) answered;
 * - `error`: the whole `error` object of the answer (extra fields such as
 *   `superseded_by`, `max_sessions`);
 * - `retryAfter`: seconds from a `Retry-After` header, if any;
 * - `transient`: whether retrying may help (no answer, 5xx, 429, an
 *   untrusted answer).
 *
 * The classes are the Python client's, so both read the same.
 */

/** The contract's `error` object (and anything else the server put in it). */
export type ErrorBody = Record<string, unknown>;

interface Details {
  code?: string;
  status?: number | null;
  error?: ErrorBody | null;
  retryAfter?: number | null;
}

/** Base class of every error this package throws. */
export class KeyseatError extends Error {
  readonly code: string;
  readonly status: number | null;
  readonly error: ErrorBody;
  readonly retryAfter: number | null;

  constructor(message: string, details: Details = {}) {
    super(message);
    this.name = new.target.name;
    this.code = details.code ?? 'error';
    this.status = details.status ?? null;
    this.error = { ...(details.error ?? {}) };
    this.retryAfter = details.retryAfter ?? null;
  }

  /** Worth retrying: no answer, a 5xx, 429, or an answer that failed the signature check. */
  get transient(): boolean {
    return false;
  }

  /** `<status> <code>: <message>` for an answer, the message otherwise. */
  describe(): string {
    return this.status === null ? this.message : `${this.status} ${this.code}: ${this.message}`;
  }
}

/** An unusable setting: a server URL that is not http(s), a bad public key, a bad option. */
export class ConfigError extends KeyseatError {
  constructor(message: string) {
    super(message, { code: 'config' });
  }
}

/** No usable answer: no connection, a timeout, or a 5xx (`status` set then). */
export class ServerUnreachable extends KeyseatError {
  constructor(message: string, details: Details = {}) {
    super(message, { code: 'unreachable', ...details });
  }
  override get transient(): boolean {
    return true;
  }
  override describe(): string {
    return this.status === null ? `server unreachable: ${this.message}` : super.describe();
  }
}

/** Why an answer is refused as not keyseat's, in the order they are checked (the Rust client's `Forgery`). */
export type Forgery =
  | 'unsigned'
  | 'malformed'
  | 'unknown_key'
  | 'bad_signature'
  | 'wrong_status'
  | 'wrong_nonce'
  | 'wrong_key';

const FORGERY_TEXT: Record<Forgery, string> = {
  unsigned: 'the answer is not signed',
  malformed: "the answer's signature header is malformed",
  unknown_key: 'the answer is signed by a key that is not pinned',
  bad_signature: "the answer's signature does not match its body",
  wrong_status: "the answer's HTTP status does not match its signed body",
  wrong_nonce: 'the answer is for another request (its nonce does not match)',
  wrong_key: 'the answer is for another access key (its key prefix does not match)',
};

/**
 * An answer that failed the signature check with the pinned public key: an
 * impostor, a replay, or a proxy that changes answers. Treated like no
 * answer (transient: retried while the lease lasts) and never acted on;
 * `status` is `null` because nothing it says is believed.
 */
export class UntrustedAnswer extends KeyseatError {
  readonly path: string;
  readonly reason: Forgery;
  constructor(path: string, reason: Forgery, detail = '') {
    const what = detail ? `${FORGERY_TEXT[reason]} (${detail})` : FORGERY_TEXT[reason];
    super(`the answer to ${path} failed the signature check: ${what}`, { code: 'untrusted' });
    this.path = path;
    this.reason = reason;
  }
  override get transient(): boolean {
    return true;
  }
}

/** What was wrong with a refused certificate. */
export type CertificateProblem = 'unknown_issuer' | 'wrong_name' | 'expired' | 'not_valid_yet' | 'other';

const CERT_TEXT: Record<Exclude<CertificateProblem, 'other'>, string> = {
  unknown_issuer: 'unknown issuer; pass the `ca` option or add the CA to NODE_EXTRA_CA_CERTS',
  wrong_name: 'it is for another name; use the name the certificate was made for in the server URL',
  expired: "it has expired; the server's certificate must be renewed",
  not_valid_yet: "it is not valid yet; check this machine's clock",
};

/**
 * The TLS handshake refused the server's certificate. Not transient: a
 * start is not retried and a running session is lost at once (reason
 * `certificate`), since a certificate does not heal within a lease.
 */
export class CertificateNotTrusted extends KeyseatError {
  readonly problem: CertificateProblem;
  /** For `wrong_name`: the names the certificate is for, when known. */
  readonly presented: string[];
  constructor(problem: CertificateProblem, detail = '', presented: string[] = []) {
    let said = problem === 'other' ? detail : CERT_TEXT[problem];
    if (problem === 'wrong_name' && presented.length > 0) {
      said = `it is for another name (${presented.join(', ')}); use that name in the server URL or fix the certificate`;
    }
    super(`the server's certificate is not trusted: ${said}`, { code: 'certificate' });
    this.problem = problem;
    this.presented = presented;
  }
}

/** The access key was refused (unknown, revoked, suspended, expired). */
export class KeyRefused extends KeyseatError {}
/** 401 `invalid_key`: the server does not know this key. */
export class InvalidKey extends KeyRefused {}
/** The key is malformed or its checksum does not match: thrown locally, before any request (`status` null). */
export class InvalidKeyFormat extends InvalidKey {
  readonly reason: string;
  constructor(reason: string) {
    super(`the access key is not valid: ${reason}`, { code: 'invalid_key' });
    this.reason = reason;
  }
}
/** 403 `key_revoked`. */
export class KeyRevoked extends KeyRefused {}
/** 403 `key_suspended`. */
export class KeySuspended extends KeyRefused {}
/** 403 `key_expired`. */
export class KeyExpired extends KeyRefused {}

/** 409 `seats_full`: every seat is live and the key's policy is `reject` (or every seat is borrowed). */
export class SeatsFull extends KeyseatError {
  /** The key's seats, from the answer. */
  get maxSessions(): number | null {
    const n = this.error['max_sessions'];
    return typeof n === 'number' ? n : null;
  }
}
/** 403 `borrow_not_allowed`: borrowing is off for this key. */
export class BorrowNotAllowed extends KeyseatError {}
/** 409 `session_id_taken`. */
export class SessionIdTaken extends KeyseatError {}

/** The session is no longer live (from the low-level {@link Api}; a session reports these through `onLost`). */
export class SessionGone extends KeyseatError {}
/** 409 `session_superseded`: another device took the seat. */
export class SessionSuperseded extends SessionGone {
  /** The name of the device that took over, if it gave one. */
  get deviceName(): string | null {
    const by = this.error['superseded_by'];
    const name = by && typeof by === 'object' ? (by as ErrorBody)['device_name'] : null;
    return typeof name === 'string' ? name : null;
  }
  /** When that device started (RFC 3339, server time). */
  get supersededAt(): string | null {
    const by = this.error['superseded_by'];
    const at = by && typeof by === 'object' ? (by as ErrorBody)['started_at'] : null;
    return typeof at === 'string' ? at : null;
  }
}
/** 410 `session_expired`. */
export class SessionExpired extends SessionGone {}
/** 410 `session_ended`. */
export class SessionEnded extends SessionGone {}
/** 410 `session_revoked`. */
export class SessionRevoked extends SessionGone {}
/** 404 `session_not_found`. */
export class SessionNotFound extends SessionGone {}

/** 400 `invalid_request`. */
export class InvalidRequest extends KeyseatError {}
/** 413 `payload_too_large`. */
export class PayloadTooLarge extends KeyseatError {}
/** 429 `rate_limited`; `retryAfter` says how long to wait. */
export class RateLimited extends KeyseatError {
  override get transient(): boolean {
    return true;
  }
}
/** 401 `unauthorized` (admin API). */
export class Unauthorized extends KeyseatError {}

/** Why a lease token is refused (the Rust client's `LeaseTokenError`, in its order). */
export type LeaseTokenProblem = 'malformed' | 'wrong_algorithm' | 'unknown_key' | 'bad_signature' | 'wrong_issuer' | 'expired';

const LEASE_TEXT: Record<LeaseTokenProblem, string> = {
  malformed: "the lease token is not a compact JWS of keyseat's claims",
  wrong_algorithm: "the lease token's algorithm is not EdDSA",
  unknown_key: 'the lease token is signed by a key that is not pinned',
  bad_signature: "the lease token's signature does not match its claims",
  wrong_issuer: 'the lease token is not issued by keyseat',
  expired: 'the lease token has run out',
};

/** A lease token that is not to be believed; `code` is `lease_<reason>`, checked offline (`status` null). */
export class InvalidLeaseToken extends KeyseatError {
  readonly reason: LeaseTokenProblem;
  constructor(reason: LeaseTokenProblem, detail = '') {
    super(detail ? `${LEASE_TEXT[reason]} (${detail})` : LEASE_TEXT[reason], { code: `lease_${reason}` });
    this.reason = reason;
  }
}

type ErrorClass = new (message: string, details: Details) => KeyseatError;

const BY_CODE: Record<string, ErrorClass> = {
  invalid_key: InvalidKey,
  key_revoked: KeyRevoked,
  key_suspended: KeySuspended,
  key_expired: KeyExpired,
  seats_full: SeatsFull,
  borrow_not_allowed: BorrowNotAllowed,
  session_id_taken: SessionIdTaken,
  session_superseded: SessionSuperseded,
  session_expired: SessionExpired,
  session_ended: SessionEnded,
  session_revoked: SessionRevoked,
  session_not_found: SessionNotFound,
  invalid_request: InvalidRequest,
  payload_too_large: PayloadTooLarge,
  rate_limited: RateLimited,
  unauthorized: Unauthorized,
};

/**
 * The error for a non-2xx answer: a 5xx is {@link ServerUnreachable}
 * (transient), 429 {@link RateLimited}, otherwise the class of the code
 * (plain {@link KeyseatError} for a code this version does not know).
 */
export function errorFromAnswer(
  status: number,
  code: string,
  message: string,
  error: ErrorBody | null,
  retryAfter: number | null,
): KeyseatError {
  const details = { code, status, error, retryAfter };
  if (status >= 500) return new ServerUnreachable(message, details);
  const cls = BY_CODE[code] ?? (status === 429 ? RateLimited : KeyseatError);
  return new cls(message, details);
}
