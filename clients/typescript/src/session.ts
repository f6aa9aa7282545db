/**
 * A held seat: the heartbeat loop that keeps the lease, retries what is
 * transient while the lease lasts, and reports the end of the session
 * (`state`, `onLost`, `lost`) the moment it learns it.
 *
 * The loop runs on Node's event loop (timers and one request at a time),
 * with the Rust client's rules: held heartbeats a sixth under the interval
 * so a takeover is told within milliseconds, one plain heartbeat per
 * interval against a server that answers at once, backoff with jitter on
 * transient failures but never past the lease, and a loss reported once.
 * Its timers and requests keep the process running while the session is
 * live, like a `setInterval`: call `end()` when the app quits.
 */

import { inspect } from 'node:util';

import type { Api, Answer } from './api.js';
import {
  ConfigError,
  KeyRefused,
  KeyseatError,
  ServerUnreachable,
  SessionNotFound,
  UntrustedAnswer,
  type ErrorBody,
} from './errors.js';
import { borrowedFrom, type Borrowed } from './lease.js';
import { backoff, holdFor, heldFor, nextWait, now } from './timing.js';

/** Why a session is no longer usable. */
export type LostReason =
  /** Another device started with the same key and took this seat (`deviceName` says which). */
  | 'superseded'
  /** The server had no heartbeat for a whole timeout. */
  | 'expired'
  /** The session was ended by another call (e.g. another process). */
  | 'ended'
  /** An administrator ended the session. */
  | 'revoked'
  /** The key was refused: `invalid_key`, `key_revoked`, `key_suspended`, `key_expired` (in `code`). */
  | 'key_refused'
  /** The server does not know the session (history pruned, another server). */
  | 'not_found'
  /** No answer from the server until the lease it last granted ran out. */
  | 'unreachable'
  /** Only answers that failed the signature check until the lease ran out. */
  | 'untrusted'
  /** A heartbeat's TLS handshake refused the certificate: lost at once. */
  | 'certificate'
  /** Another refusal the client does not expect (a bug on either side). */
  | 'rejected';

/** What a session is doing now. */
export type SessionState = 'active' | 'retrying' | 'lost' | 'ended' | 'borrowed';

/** The details of a loss. */
export class LostInfo {
  constructor(
    readonly reason: LostReason,
    /** For `superseded`: the device that took over, if it gave a name. */
    readonly deviceName: string | null = null,
    /** For `superseded`: when it started (RFC 3339, server time). */
    readonly at: string | null = null,
    /** The contract's error code of the answer, if any. */
    readonly code: string | null = null,
    /** The server's message, or what went wrong. */
    readonly message: string = '',
  ) {}

  /** The same sentences as the Rust and Python clients. */
  toString(): string {
    switch (this.reason) {
      case 'superseded':
        return this.deviceName !== null
          ? `superseded: device "${this.deviceName}" started with the same access key`
          : 'superseded: another device started with the same access key';
      case 'expired':
        return "expired: the server missed this device's heartbeats";
      case 'ended':
        return 'ended elsewhere';
      case 'revoked':
        return 'revoked by an administrator';
      case 'key_refused':
        return `key refused (${this.code}): ${this.message}`;
      case 'not_found':
        return 'the server no longer knows this session';
      case 'unreachable':
        return `unreachable: no answer from the server before the lease ran out (${this.message})`;
      case 'untrusted':
        return `untrusted: no answer that passed the signature check before the lease ran out (${this.message})`;
      case 'certificate':
        return this.message;
      default:
        return `rejected (${this.code}): ${this.message}`;
    }
  }
}

/** A device whose session a start ended. */
export interface TerminatedDevice {
  sessionId: string;
  deviceName: string | null;
  /** Its last heartbeat (RFC 3339, server time). */
  lastHeartbeat: string | null;
}

/** What the server said when the session started. */
export interface StartInfo {
  sessionId: string;
  /** Strictly increasing per key: work from a superseded device can be told apart. */
  fence: number;
  /** Whether starting here ended another device's session. */
  previousSessionTerminated: boolean;
  terminated: TerminatedDevice[];
  /** Seconds between heartbeats the server asked for. */
  heartbeatIntervalSeconds: number;
  /** Seconds the server keeps a silent session. */
  sessionTimeoutSeconds: number;
  startedAt: string | null;
  expiresAt: string | null;
}

/** Something the heartbeat loop noticed, for apps that show it. */
export type SessionEvent =
  | { type: 'heartbeat_failed'; attempt: number; error: string; leaseLeftMs: number }
  | { type: 'recovered'; failedAttempts: number }
  | { type: 'lost'; info: LostInfo };

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

function seconds(body: Answer, name: string): number | null {
  const v = body[name];
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null;
}

/** A start's (or borrow's) answer read as a {@link StartInfo}; one that does not fit is no keyseat answer. */
export function parseStart(body: Answer): StartInfo {
  const bad = (name: string) => new ServerUnreachable(`the server's start answer lacks ${name}`);
  const sessionId = str(body['session_id']);
  if (sessionId === null) throw bad('session_id');
  const fence = body['fence'];
  if (typeof fence !== 'number' || !Number.isInteger(fence)) throw bad('fence');
  const interval = seconds(body, 'heartbeat_interval_seconds');
  if (interval === null) throw bad('heartbeat_interval_seconds');
  const timeout = seconds(body, 'session_timeout_seconds');
  if (timeout === null) throw bad('session_timeout_seconds');
  const raw = Array.isArray(body['terminated_sessions']) ? body['terminated_sessions'] : [];
  const terminated = raw
    .filter((t): t is ErrorBody => typeof t === 'object' && t !== null)
    .map((t) => ({ sessionId: str(t['session_id']) ?? '', deviceName: str(t['device_name']), lastHeartbeat: str(t['last_heartbeat']) }));
  return {
    sessionId,
    fence,
    previousSessionTerminated: body['previous_session_terminated'] === true,
    terminated,
    heartbeatIntervalSeconds: Math.max(interval, 1),
    sessionTimeoutSeconds: timeout,
    startedAt: str(body['started_at']),
    expiresAt: str(body['expires_at']),
  };
}

const SIMPLE: Record<string, LostReason> = {
  session_expired: 'expired',
  session_ended: 'ended',
  session_revoked: 'revoked',
  session_not_found: 'not_found',
  invalid_key: 'key_refused',
  key_revoked: 'key_refused',
  key_suspended: 'key_refused',
  key_expired: 'key_refused',
  certificate: 'certificate',
};

/** The loss a terminal (non-transient) error means. */
function lostFromError(e: KeyseatError): LostInfo {
  if (e.code === 'session_superseded') {
    const by = e.error['superseded_by'];
    const o = typeof by === 'object' && by !== null ? (by as ErrorBody) : {};
    return new LostInfo('superseded', str(o['device_name']), str(o['started_at']), e.code, e.message);
  }
  return new LostInfo(SIMPLE[e.code] ?? 'rejected', null, null, e.code, e.message);
}

/** Why a session whose lease ran out between failed heartbeats is lost. */
function lostAfter(error: KeyseatError | null, forged: UntrustedAnswer | null): LostInfo {
  const untrusted = forged ?? (error instanceof UntrustedAnswer ? error : null);
  if (untrusted !== null) return new LostInfo('untrusted', null, null, untrusted.code, untrusted.message);
  if (error === null) return new LostInfo('unreachable', null, null, null, 'heartbeats kept failing');
  return new LostInfo('unreachable', null, null, error.code, error.describe());
}

/** Calls an app's callback without letting it break the loop (a throw or a rejected promise is reported as a warning). */
function callSafely(fn: (...args: never[]) => unknown, ...args: unknown[]): void {
  try {
    const r = (fn as (...a: unknown[]) => unknown)(...args);
    if (r && typeof (r as Promise<unknown>).then === 'function') {
      (r as Promise<unknown>).then(undefined, (e: unknown) => process.emitWarning(`keyseat: a callback failed: ${String(e)}`));
    }
  } catch (e) {
    process.emitWarning(`keyseat: a callback threw: ${String(e)}`);
  }
}

/** What a session needs from its client. */
export interface SessionSettings {
  api: Api;
  accessKey: string;
  deviceName: string | null;
  fingerprint: string | null;
  waiting: boolean;
  onEvent: ((event: SessionEvent) => unknown) | null;
}

/** A live session; get one from `Client.start()`. */
export class Session {
  readonly #s: SessionSettings;
  readonly #info: StartInfo;
  #state: SessionState = 'active';
  #lost: LostInfo | null = null;
  #stop = false;
  #intervalSeconds: number;
  #leaseDeadline: number;
  #failures = 0;
  #onLost: Array<(info: LostInfo) => unknown> = [];
  #settled: Array<(info: LostInfo | null) => void> = [];
  /** Cancels the pause or the call in progress when the session stops. */
  #abort = new AbortController();
  #loop: Promise<void>;

  /** @internal Made by `Client.start()`. */
  constructor(settings: SessionSettings, info: StartInfo, leaseFrom: number) {
    this.#s = settings;
    this.#info = info;
    this.#intervalSeconds = info.heartbeatIntervalSeconds;
    this.#leaseDeadline = leaseFrom + info.sessionTimeoutSeconds * 1000;
    this.#loop = this.#heartbeats().catch((e: unknown) => {
      // A bug here must not be an unhandled rejection; the session is lost instead.
      this.#lose(new LostInfo('rejected', null, null, 'internal', `the heartbeat loop failed: ${String(e)}`));
    });
  }

  /** What the server said at the start. */
  get info(): StartInfo {
    return this.#info;
  }
  get sessionId(): string {
    return this.#info.sessionId;
  }
  /** Strictly increasing per key. */
  get fence(): number {
    return this.#info.fence;
  }
  /** Whether starting here ended another device's session ("your session on X was disconnected"). */
  get previousSessionTerminated(): boolean {
    return this.#info.previousSessionTerminated;
  }
  /** The interval the server asked for most recently (seconds). */
  get heartbeatIntervalSeconds(): number {
    return this.#intervalSeconds;
  }
  get state(): SessionState {
    return this.#state;
  }
  /** Why the session was lost, or `null` while it is not. */
  get lost(): LostInfo | null {
    return this.#lost;
  }
  /** Whether licensed work may continue (active, or retrying within the lease). */
  get isUsable(): boolean {
    return this.#state === 'active' || this.#state === 'retrying';
  }
  /** Heartbeats failed in a row (0 when active). */
  get failedAttempts(): number {
    return this.#failures;
  }
  /** Milliseconds until the lease the server last granted runs out. */
  get leaseLeftMs(): number {
    return Math.max(this.#leaseDeadline - now(), 0);
  }

  /**
   * Registers `callback(info)`, called once when the session is lost (at
   * once, on the next tick, if it already is): `info.reason`, and for a
   * takeover `info.deviceName`, the other device's name. Not called when
   * the app ends the session itself. A callback that throws or rejects is
   * reported as a process warning. Returns a function that unregisters it.
   */
  onLost(callback: (info: LostInfo) => unknown): () => void {
    if (typeof callback !== 'function') throw new ConfigError('onLost needs a function');
    if (this.#state === 'lost') {
      const info = this.#lost!;
      queueMicrotask(() => callSafely(callback, info));
      return () => {};
    }
    if (this.#state !== 'active' && this.#state !== 'retrying') return () => {};
    this.#onLost.push(callback);
    return () => {
      this.#onLost = this.#onLost.filter((c) => c !== callback);
    };
  }

  /** Resolves with why the session was lost, or with `null` when the app ends (or borrows) it first. */
  whenLost(): Promise<LostInfo | null> {
    if (this.#state === 'lost') return Promise.resolve(this.#lost);
    if (this.#state === 'ended' || this.#state === 'borrowed') return Promise.resolve(null);
    return new Promise((resolve) => this.#settled.push(resolve));
  }

  /**
   * Ends the session: stops the heartbeats at once and tells the server.
   * Resolves to whether the server still had it live (`false` if it had
   * already ended, e.g. superseded, was lost, or `end` was called before).
   * Never rejects for a session that was already lost or ended; for a live
   * one it rejects with what the server call failed with.
   */
  async end(options: { timeoutMs?: number } = {}): Promise<boolean> {
    const wasLost = this.#state === 'lost';
    if (this.#state === 'ended' || this.#state === 'borrowed') return false;
    if (!wasLost) this.#settle('ended', null);
    // A lost session may still be live on the server (unreachable): ending
    // it frees the seat as soon as the server is back.
    try {
      const body = await this.#s.api.end(this.#s.accessKey, this.#info.sessionId, options);
      return body['ended'] === true;
    } catch (e) {
      if (wasLost || e instanceof KeyRefused || e instanceof SessionNotFound) return false;
      throw e;
    }
  }

  /**
   * Borrows this session for `hours` (1 up to the key's
   * `max_borrow_hours`) before going offline: same session, same fence.
   * On success the heartbeats stop and `state` becomes `borrowed`; on
   * failure the session goes on heartbeating.
   */
  async borrow(hours: number): Promise<Borrowed> {
    if (!Number.isInteger(hours) || hours < 0) {
      throw new ConfigError("hours must be a whole number of hours (1 up to the key's max_borrow_hours)");
    }
    if (!this.isUsable) throw new ConfigError(`the session is ${this.#state}: only a live session can be borrowed`);
    const s = this.#s;
    const body = await s.api.borrow(s.accessKey, hours, this.#info.sessionId, { name: s.deviceName, fingerprint: s.fingerprint });
    const borrowed = borrowedFrom(s.api, s.accessKey, body, parseStart(body));
    if (this.isUsable) this.#settle('borrowed', null);
    return borrowed;
  }

  /** Stops the loop and wakes whoever waits, with the final state. */
  #settle(state: 'ended' | 'borrowed' | 'lost', info: LostInfo | null): void {
    this.#stop = true;
    this.#state = state;
    this.#lost = info;
    this.#abort.abort();
    const waiting = this.#settled;
    this.#settled = [];
    for (const resolve of waiting) resolve(info);
  }

  /** Records a loss (once) unless the app already ended the session. */
  #lose(info: LostInfo): void {
    if (this.#stop || this.#state === 'lost' || this.#state === 'ended') return;
    const callbacks = this.#onLost;
    this.#onLost = [];
    this.#settle('lost', info);
    this.#emit({ type: 'lost', info });
    for (const cb of callbacks) callSafely(cb, info);
  }

  #emit(event: SessionEvent): void {
    if (this.#s.onEvent !== null) callSafely(this.#s.onEvent, event);
  }

  /** Waits `ms`, or less if the session stops meanwhile. */
  #pause(ms: number): Promise<void> {
    if (this.#stop) return Promise.resolve();
    return new Promise((resolve) => {
      const signal = this.#abort.signal;
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(ms, 0));
      signal.addEventListener('abort', done, { once: true });
    });
  }

  async #heartbeats(): Promise<void> {
    const { api, accessKey } = this.#s;
    let failures = 0;
    let error: KeyseatError | null = null;
    // The latest forged answer since the last trusted one: with it, a lease
    // that runs out is lost as untrusted even if the very last attempt got
    // no answer at all.
    let forged: UntrustedAnswer | null = null;
    // Held from the start, so a takeover right after it is told too.
    let wait = this.#s.waiting && heldFor(this.#intervalSeconds) > 0 ? 0 : this.#intervalSeconds * 1000;
    for (;;) {
      await this.#pause(wait);
      if (this.#stop) return;
      if (failures > 0 && now() >= this.#leaseDeadline) {
        this.#lose(lostAfter(error, forged));
        return;
      }
      const sentAt = now();
      const leaseLeft = Math.max(this.#leaseDeadline - sentAt, 0);
      // A call never outlives the lease while retrying: past it the session
      // is lost anyway. After a silent stretch with no failure (the machine
      // slept) one call is still sent, so the server can say what happened.
      const budget = failures > 0 ? Math.max(leaseLeft, 1) : Math.max(leaseLeft, 500);
      // Held a little under the interval, so the end of the session is told
      // at once; never while retrying, when every second of the lease counts.
      const hold = this.#s.waiting && failures === 0 ? holdFor(this.#intervalSeconds, leaseLeft, api.timeoutMs) : 0;
      let body: Answer;
      try {
        body = await api.heartbeat(accessKey, this.#info.sessionId, {
          signal: this.#abort.signal,
          ...(hold > 0 ? { waitSeconds: hold } : { timeoutMs: budget }),
        });
      } catch (e) {
        if (this.#stop) return;
        const err = e instanceof KeyseatError ? e : new ServerUnreachable(`${String(e)}`);
        if (!err.transient) {
          this.#lose(lostFromError(err));
          return;
        }
        error = err;
        if (err instanceof UntrustedAnswer) forged = err;
        failures += 1;
        this.#failures = failures;
        this.#state = 'retrying';
        const left = Math.max(this.#leaseDeadline - now(), 0);
        if (left <= 0) {
          this.#lose(lostAfter(error, forged));
          return;
        }
        this.#emit({ type: 'heartbeat_failed', attempt: failures, error: err.describe(), leaseLeftMs: left });
        if (this.#stop) return;
        // Retry sooner than the interval, but never past the lease.
        wait = Math.min(backoff(failures, this.#intervalSeconds * 1000, err.retryAfter), left);
        continue;
      }
      if (this.#stop) return;
      const interval = seconds(body, 'heartbeat_interval_seconds');
      this.#leaseDeadline = sentAt + this.#info.sessionTimeoutSeconds * 1000;
      if (interval !== null) this.#intervalSeconds = Math.max(interval, 1);
      this.#state = 'active';
      this.#failures = 0;
      if (failures > 0) this.#emit({ type: 'recovered', failedAttempts: failures });
      failures = 0;
      forged = null;
      wait = nextWait(hold, now() - sentAt, this.#intervalSeconds);
    }
  }

  /** @internal For tests: resolves when the heartbeat loop has returned. */
  get stopped(): Promise<void> {
    return this.#loop;
  }

  toString(): string {
    return `Session(${this.sessionId}, fence ${this.fence}, ${this.#state})`;
  }
  toJSON(): Record<string, unknown> {
    return { sessionId: this.sessionId, fence: this.fence, state: this.#state };
  }
  [inspect.custom](): string {
    return this.toString();
  }
}
