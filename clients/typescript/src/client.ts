/**
 * {@link Client}: connection settings for one access key, and the start
 * (and borrow) that hands out a {@link Session}.
 *
 * The key's checksum is checked in the constructor, so a typo throws
 * {@link InvalidKeyFormat} at once, without a request. A start is retried
 * on transient failures with the same client-made session id, which the
 * server treats as the same start, so a lost answer never costs a seat.
 */

import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';

import { Api, type Answer, type ApiOptions } from './api.js';
import { ConfigError, KeyseatError } from './errors.js';
import { checkAccessKey, redact } from './keys.js';
import { borrowedFrom, type Borrowed } from './lease.js';
import { Session, parseStart, type SessionEvent } from './session.js';
import { backoff, now } from './timing.js';

/** Cap of the pause between start attempts (ms). */
const START_RETRY_CAP_MS = 5000;

/** Options of a {@link Client}. */
export interface ClientOptions extends ApiOptions {
  /** Shown to the other device when this one takes over, and to operators. */
  deviceName?: string;
  /** A stable device fingerprint ({@link machineFingerprint}): the same device restarts at once on a `reject` key. */
  fingerprint?: string;
  /** How many times a start (or borrow) is tried on transient failures (default 3). */
  startAttempts?: number;
  /** Called with every {@link SessionEvent} of sessions this client starts; keep it quick. */
  onEvent?: (event: SessionEvent) => unknown;
  /**
   * Whether heartbeats ask the server to hold them until the next is due
   * (default true: a takeover reaches `onLost` within milliseconds). Against
   * a server that answers at once the client falls back to one plain
   * heartbeat per interval by itself.
   */
  waitingHeartbeats?: boolean;
}

function optionalText(name: string, v: unknown): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') throw new ConfigError(`${name} must be a string`);
  return v;
}

/** Connection settings for one access key. */
export class Client {
  readonly #key: string;
  readonly #api: Api;
  readonly deviceName: string | null;
  readonly fingerprint: string | null;
  readonly startAttempts: number;
  readonly waitingHeartbeats: boolean;
  readonly #onEvent: ((event: SessionEvent) => unknown) | null;

  constructor(serverUrl: string, accessKey: string, options: ClientOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new ConfigError('options must be an object');
    this.#key = checkAccessKey(accessKey);
    this.#api = new Api(serverUrl, options);
    this.deviceName = optionalText('deviceName', options.deviceName);
    this.fingerprint = optionalText('fingerprint', options.fingerprint);
    const attempts = options.startAttempts ?? 3;
    if (!Number.isInteger(attempts)) throw new ConfigError('startAttempts must be a whole number');
    this.startAttempts = Math.max(attempts, 1);
    if (options.onEvent !== undefined && typeof options.onEvent !== 'function') throw new ConfigError('onEvent must be a function');
    this.#onEvent = options.onEvent ?? null;
    this.waitingHeartbeats = options.waitingHeartbeats ?? true;
  }

  /** The low-level API, for calls this class does not wrap. */
  get api(): Api {
    return this.#api;
  }
  /** `ks_` and the first 8 characters of the key: safe to show and log. */
  get keyPrefix(): string {
    return redact(this.#key);
  }

  /** The key's live sessions (`POST /api/session/status`). */
  status(): Promise<Answer> {
    return this.#api.status(this.#key);
  }

  /** Runs a start-like call until it succeeds or fails for good, same session id each time. */
  async #retried(call: () => Promise<Answer>): Promise<Answer> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (e) {
        if (e instanceof KeyseatError && e.transient && attempt < this.startAttempts) {
          await new Promise((r) => setTimeout(r, backoff(attempt, START_RETRY_CAP_MS, e.retryAfter)));
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * Starts a session and its heartbeats. Rejects with {@link SeatsFull}, a
   * {@link KeyRefused} subclass, {@link ServerUnreachable},
   * {@link UntrustedAnswer}, {@link CertificateNotTrusted}, ...
   */
  async start(): Promise<Session> {
    const sessionId = randomUUID();
    const device = { name: this.deviceName, fingerprint: this.fingerprint };
    let sentAt = now();
    const body = await this.#retried(() => {
      sentAt = now();
      return this.#api.start(this.#key, sessionId, device);
    });
    const settings = {
      api: this.#api,
      accessKey: this.#key,
      deviceName: this.deviceName,
      fingerprint: this.fingerprint,
      waiting: this.waitingHeartbeats,
      onEvent: this.#onEvent,
    };
    return new Session(settings, parseStart(body), sentAt);
  }

  /**
   * Borrows a seat for `hours` (1 up to the key's `max_borrow_hours`) for
   * offline use: held without heartbeats until `borrowedUntil`, never
   * superseded. Keep `leaseToken` and check it offline with
   * {@link verifyLeaseToken}. Rejects with {@link BorrowNotAllowed},
   * {@link InvalidRequest} (more hours than the key allows),
   * {@link SeatsFull}, ... A borrow whose answer was lost or untrusted is
   * given back at once, since the real server may have taken the seat.
   */
  async borrow(hours: number, options: { sessionId?: string } = {}): Promise<Borrowed> {
    if (!Number.isInteger(hours) || hours < 0) {
      throw new ConfigError("hours must be a whole number of hours (1 up to the key's max_borrow_hours)");
    }
    const given = optionalText('sessionId', options.sessionId);
    const sessionId = given ?? randomUUID();
    const device = { name: this.deviceName, fingerprint: this.fingerprint };
    let body: Answer;
    try {
      body = await this.#retried(() => this.#api.borrow(this.#key, hours, sessionId, device));
    } catch (e) {
      if (given === null && e instanceof KeyseatError && (e.code === 'untrusted' || e.transient)) {
        await this.#api.end(this.#key, sessionId).catch(() => undefined);
      }
      throw e;
    }
    return borrowedFrom(this.#api, this.#key, body, parseStart(body));
  }

  toString(): string {
    return `Client(${this.#api.base}, ${this.keyPrefix})`;
  }
  toJSON(): Record<string, unknown> {
    return { server: this.#api.base, key: this.keyPrefix, deviceName: this.deviceName };
  }
  [inspect.custom](): string {
    return this.toString();
  }
}
