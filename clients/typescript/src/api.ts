/**
 * The wire calls, one method per route, with no retry policy: what
 * {@link Client} builds on, for calls it does not wrap.
 *
 * Requests go through `node:http`/`node:https`, not the global `fetch`:
 * Node's fetch has no per-request CA option (private-CA TLS would need
 * undici's dispatcher, which Node does not expose as a built-in), does not
 * name a refused certificate reliably, and in Electron's main process
 * `fetch` may be Chromium's network stack rather than Node's. With
 * `node:https` the `ca` option is Node's own: PEM certificates trusted
 * besides Node's bundled roots (and `NODE_EXTRA_CA_CERTS`).
 */

import * as http from 'node:http';
import * as https from 'node:https';
import { rootCertificates } from 'node:tls';
import { readFileSync } from 'node:fs';

import {
  CertificateNotTrusted,
  ConfigError,
  KeyseatError,
  ServerUnreachable,
  errorFromAnswer,
  type CertificateProblem,
  type ErrorBody,
} from './errors.js';
import { shownPrefix } from './keys.js';
import { SIGNATURE_HEADER, newNonce, pinnedKeys, verifyAnswer, type PinnedKey, type PublicKeys } from './signing.js';
import { VERSION } from './version.js';

/** Default time budget of one HTTP call, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** The most of an answer read (a keyseat answer is far smaller): an impostor cannot fill memory. */
const MAX_ANSWER_BYTES = 1 << 20;

/** A JSON object as the server answers it. */
export type Answer = Record<string, unknown>;

/** Options of {@link Api} (and of {@link Client}). */
export interface ApiOptions {
  /** Time budget of each call in milliseconds (default 10 000). */
  timeoutMs?: number;
  /** The server's public signing key(s): every answer must then be signed by one (docs/api.md, "Signed answers"). */
  publicKey?: PublicKeys;
  /** PEM CA certificate(s) trusted besides Node's roots, as Node's `https` takes them (a private CA). */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>;
  /** A PEM file of CA certificates trusted besides Node's roots (read once, here). */
  caFile?: string;
}

interface Exchange {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: Buffer;
}

function checkUrl(serverUrl: unknown): URL {
  if (typeof serverUrl !== 'string') throw new ConfigError('the server URL must be a string');
  const base = serverUrl.trim().replace(/\/+$/, '');
  if (!base.startsWith('http://') && !base.startsWith('https://')) {
    throw new ConfigError(`server URL must start with http:// or https:// (got \`${base}\`)`);
  }
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new ConfigError(`server URL \`${base}\` has no host`);
  }
  if (!url.hostname || /\s/.test(base)) throw new ConfigError(`server URL \`${base}\` has no host`);
  return url;
}

function pemList(ca: ApiOptions['ca'], caFile: string | undefined): string[] {
  const out: string[] = [];
  const items = ca === undefined ? [] : Array.isArray(ca) ? ca : [ca];
  for (const item of items as Array<string | Buffer>) {
    if (typeof item !== 'string' && !Buffer.isBuffer(item)) throw new ConfigError('ca must be PEM text, a Buffer, or an array of them');
    const text = item.toString();
    if (!text.includes('-----BEGIN CERTIFICATE-----')) {
      throw new ConfigError('the ca option holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)');
    }
    out.push(text);
  }
  if (caFile !== undefined) {
    if (typeof caFile !== 'string') throw new ConfigError('caFile must be a path');
    let text: string;
    try {
      text = readFileSync(caFile, 'utf8');
    } catch (e) {
      throw new ConfigError(`the CA file ${caFile} cannot be read: ${(e as Error).message}`);
    }
    if (!text.includes('-----BEGIN CERTIFICATE-----')) {
      throw new ConfigError(`the CA file ${caFile} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)`);
    }
    out.push(text);
  }
  return out;
}

/**
 * What Node trusts without a `ca` option: its bundled roots and the file
 * named by NODE_EXTRA_CA_CERTS. A `ca` option replaces both in Node, so
 * they are given again beside it.
 */
function defaultRoots(): string[] {
  const roots = [...rootCertificates];
  const extraFile = process.env['NODE_EXTRA_CA_CERTS'];
  if (extraFile) {
    try {
      roots.push(readFileSync(extraFile, 'utf8'));
    } catch {
      // Node itself only warns about an unreadable file; so does nothing here.
    }
  }
  return roots;
}

// Node's TLS error codes for a refused certificate.
const CERT_CODES: Record<string, CertificateProblem> = {
  UNABLE_TO_GET_ISSUER_CERT: 'unknown_issuer',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unknown_issuer',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unknown_issuer',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'unknown_issuer',
  SELF_SIGNED_CERT_IN_CHAIN: 'unknown_issuer',
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not_valid_yet',
  ERR_TLS_CERT_ALTNAME_INVALID: 'wrong_name',
  CERT_REVOKED: 'other',
  CERT_SIGNATURE_FAILURE: 'other',
  CERT_UNTRUSTED: 'other',
  CERT_REJECTED: 'other',
  INVALID_PURPOSE: 'other',
};

/** What a failed exchange was: a refused certificate, or no answer (transient). */
function failure(e: unknown): KeyseatError {
  const err = e as NodeJS.ErrnoException & { cert?: { subjectaltname?: string }; reason?: string };
  const problem = typeof err?.code === 'string' ? CERT_CODES[err.code] : undefined;
  if (problem !== undefined) {
    const names = (err.cert?.subjectaltname ?? '')
      .split(',')
      .map((s) => s.trim().replace(/^(DNS|IP Address):/, ''))
      .filter(Boolean);
    return new CertificateNotTrusted(problem, err.message, problem === 'wrong_name' ? names : []);
  }
  if (err?.name === 'AbortError') return new ServerUnreachable('the call was cancelled', { code: 'cancelled' });
  const text = err?.code ? `${err.message}` : String(err?.message ?? err);
  return new ServerUnreachable(text);
}

function retryAfterOf(headers: http.IncomingHttpHeaders): number | null {
  const v = headers['retry-after'];
  if (typeof v !== 'string' || !/^\s*\d+\s*$/.test(v)) return null;
  return Number(v.trim());
}

/** An answer's object on 2xx, its contract error (thrown) otherwise. */
function read({ status, headers, raw }: Exchange): Answer {
  const retryAfter = retryAfterOf(headers);
  const text = raw.toString('utf8');
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  const isObj = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed);
  if (status >= 200 && status < 300) {
    if (!isObj) {
      throw new KeyseatError("the server's answer was not a JSON object", { code: 'invalid_response', status, retryAfter });
    }
    return parsed as Answer;
  }
  let error: ErrorBody | null = null;
  const inner = isObj ? (parsed as Answer)['error'] : null;
  if (typeof inner === 'object' && inner !== null && typeof (inner as ErrorBody)['code'] === 'string') error = inner as ErrorBody;
  const code = (error?.['code'] as string | undefined) ?? `http_${status}`;
  let message = error?.['message'];
  if (typeof message !== 'string') {
    const location = headers['location'];
    message =
      status >= 300 && status < 400 && location
        ? `the server redirected to ${location}; use that URL as the server URL`
        : text.slice(0, 200);
  }
  throw errorFromAnswer(status, code, message as string, error, retryAfter);
}

/** Per-call settings of {@link Api.post}. */
export interface CallOptions {
  /** Shortens this call's budget (never lengthens it), in milliseconds. */
  timeoutMs?: number;
  /** Cancels the call (it then fails with a {@link ServerUnreachable} of code `cancelled`). */
  signal?: AbortSignal;
}

/**
 * A keyseat server's session API. Every method resolves to the answer's
 * JSON object on 2xx and rejects with a {@link KeyseatError} subclass
 * otherwise ({@link ServerUnreachable} when no answer came, or a 5xx).
 */
export class Api {
  readonly #base: URL;
  readonly #timeoutMs: number;
  readonly #pinned: PinnedKey[];
  readonly #agent: http.Agent;

  constructor(serverUrl: string, options: ApiOptions = {}) {
    this.#base = checkUrl(serverUrl);
    const t = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) {
      throw new ConfigError('timeoutMs must be a positive number of milliseconds');
    }
    this.#timeoutMs = t;
    this.#pinned = pinnedKeys(options.publicKey);
    const extra = pemList(options.ca, options.caFile);
    // Keep-alive sockets: Node unrefs idle ones, so they never hold the process open.
    this.#agent =
      this.#base.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, ...(extra.length > 0 ? { ca: [...defaultRoots(), ...extra] } : {}) })
        : new http.Agent({ keepAlive: true });
  }

  /** The server URL, without a trailing slash. */
  get base(): string {
    return this.#base.href.replace(/\/+$/, '');
  }
  /** The time budget of one call, in milliseconds. */
  get timeoutMs(): number {
    return this.#timeoutMs;
  }
  /** Whether answers are checked against pinned keys. */
  get verifies(): boolean {
    return this.#pinned.length > 0;
  }
  /** The pinned keys (empty: answers are not checked). */
  get pinned(): readonly PinnedKey[] {
    return this.#pinned;
  }

  /** One exchange within `budgetMs`: status, headers and raw body. */
  #send(method: string, path: string, body: Answer | null, budgetMs: number, signal?: AbortSignal): Promise<Exchange> {
    const url = new URL(this.#base.pathname.replace(/\/+$/, '') + path, this.#base);
    const data = body === null ? null : Buffer.from(JSON.stringify(body), 'utf8');
    const headers: http.OutgoingHttpHeaders = {
      'user-agent': `keyseat-client-node/${VERSION}`,
      accept: 'application/json',
    };
    if (data !== null) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = data.length;
    }
    const lib = url.protocol === 'https:' ? https : http;
    return new Promise<Exchange>((resolve, reject) => {
      let done = false;
      const finish = (e: unknown, value?: Exchange) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (e) reject(failure(e));
        else resolve(value!);
      };
      const req = lib.request(url, { method, headers, agent: this.#agent }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) {
            req.destroy(new Error(`the answer is over ${MAX_ANSWER_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => finish(null, { status: res.statusCode ?? 0, headers: res.headers, raw: Buffer.concat(chunks) }));
        res.on('error', (e) => finish(new Error(`reading the answer failed: ${e.message}`)));
        res.on('close', () => {
          if (!res.complete) finish(new Error('reading the answer failed: the connection closed'));
        });
      });
      const timer = setTimeout(() => req.destroy(new Error('timed out')), budgetMs);
      const onAbort = () => req.destroy(Object.assign(new Error('cancelled'), { name: 'AbortError' }));
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => finish(e));
      req.end(data ?? undefined);
    });
  }

  /** `GET` a path (not verified: the health and key-list routes are not signed). */
  async get(path: string, options: CallOptions = {}): Promise<Answer> {
    return read(await this.#send('GET', path, null, this.#budget(options), options.signal));
  }

  #budget(options: CallOptions, extraMs = 0): number {
    const t = options.timeoutMs === undefined ? this.#timeoutMs : Math.min(options.timeoutMs, this.#timeoutMs);
    return Math.max(t, 1) + Math.max(extraMs, 0);
  }

  /**
   * POSTs JSON to `path` (e.g. `/api/session/status`). With a pinned key a
   * fresh `nonce` is added and the answer verified before anything in it,
   * its status included, is believed.
   */
  post(path: string, body: Answer, options: CallOptions = {}): Promise<Answer> {
    return this.#post(path, body, this.#budget(options), options.signal);
  }

  async #post(path: string, body: Answer, budgetMs: number, signal?: AbortSignal): Promise<Answer> {
    if (this.#pinned.length === 0) return read(await this.#send('POST', path, body, budgetMs, signal));
    const nonce = newNonce();
    const exchange = await this.#send('POST', path, { ...body, nonce }, budgetMs, signal);
    const header = exchange.headers[SIGNATURE_HEADER];
    const key = typeof body['access_key'] === 'string' ? body['access_key'] : '';
    verifyAnswer(this.#pinned, path, exchange.status, typeof header === 'string' ? header : undefined, exchange.raw, nonce, shownPrefix(key));
    return read(exchange);
  }

  /** `GET /health`. */
  health(options?: CallOptions): Promise<Answer> {
    return this.get('/health', options);
  }
  /** `GET /api/signing-keys`: the JWK set of the keys that sign answers. */
  signingKeys(options?: CallOptions): Promise<Answer> {
    return this.get('/api/signing-keys', options);
  }

  /** `POST /api/session/start`. */
  start(accessKey: string, sessionId: string | null, device: Device = {}, options?: CallOptions): Promise<Answer> {
    const body: Answer = { access_key: accessKey, device: { name: device.name ?? null, fingerprint: device.fingerprint ?? null } };
    if (sessionId !== null) body['session_id'] = sessionId;
    return this.post('/api/session/start', body, options);
  }

  /** `POST /api/session/borrow`: a start's answer plus `borrowed_until` and `lease_token`. */
  borrow(accessKey: string, hours: number, sessionId: string | null, device: Device = {}, options?: CallOptions): Promise<Answer> {
    const body: Answer = { access_key: accessKey, device: { name: device.name ?? null, fingerprint: device.fingerprint ?? null }, hours };
    if (sessionId !== null) body['session_id'] = sessionId;
    return this.post('/api/session/borrow', body, options);
  }

  /**
   * `POST /api/session/heartbeat`. With `waitSeconds` the server holds the
   * answer until that many seconds pass or the session ends; the call's
   * budget is then the wait plus the timeout.
   */
  heartbeat(accessKey: string, sessionId: string, options: CallOptions & { waitSeconds?: number } = {}): Promise<Answer> {
    const wait = Math.max(Math.floor(options.waitSeconds ?? 0), 0);
    const body: Answer = { access_key: accessKey, session_id: sessionId };
    if (wait > 0) body['wait_seconds'] = wait;
    return this.#post('/api/session/heartbeat', body, this.#budget(options, wait * 1000), options.signal);
  }

  /** `POST /api/session/end`. */
  end(accessKey: string, sessionId: string, options?: CallOptions): Promise<Answer> {
    return this.post('/api/session/end', { access_key: accessKey, session_id: sessionId }, options);
  }

  /** `POST /api/session/status`. */
  status(accessKey: string, options?: CallOptions): Promise<Answer> {
    return this.post('/api/session/status', { access_key: accessKey }, options);
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.#agent.destroy();
  }

  toString(): string {
    return `Api(${this.base})`;
  }
}

/** What a start or borrow says about the device. */
export interface Device {
  name?: string | null;
  fingerprint?: string | null;
}
