/**
 * keyseat-client: the device side of a keyseat license seat server, for
 * Node 18+ and Electron's main process, with Node's built-ins only.
 *
 * ```ts
 * import { Client } from 'keyseat-client';
 *
 * const client = new Client('https://licenses.example.com', key, { deviceName: "Ana's laptop" });
 * const session = await client.start(); // rejects with InvalidKey, SeatsFull, ...
 * session.onLost((lost) => console.log('licence lost:', String(lost), lost.deviceName));
 * // ... the app runs; heartbeats run on timers ...
 * await session.end();
 * ```
 */

export { Api, DEFAULT_TIMEOUT_MS, type Answer, type ApiOptions, type CallOptions, type Device } from './api.js';
export { Client, type ClientOptions } from './client.js';
export * from './errors.js';
export { fingerprintOf, machineFingerprint, machineId } from './fingerprint.js';
export { checkAccessKey, isAccessKey, redact } from './keys.js';
export { Borrowed, ISSUER, verifyLeaseToken, type LeaseClaims } from './lease.js';
export {
  LostInfo,
  Session,
  type LostReason,
  type SessionEvent,
  type SessionState,
  type StartInfo,
  type TerminatedDevice,
} from './session.js';
export { PinnedKey, kidOf, parseHeader, verifyAnswer, type PublicKeys } from './signing.js';
export { backoff, heldFor, holdFor, nextWait } from './timing.js';
export { VERSION } from './version.js';
