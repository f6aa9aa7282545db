/**
 * The timing rules of the heartbeats, pure so they can be tested alone:
 * the same numbers as the Rust and Python clients (docs/api.md, "Waiting
 * heartbeat").
 */

/** First retry delay after a failed heartbeat (ms); doubles per failure. */
export const FIRST_RETRY_MS = 500;

/**
 * Exponential backoff with "equal jitter" (half fixed, half random): 0.5 s
 * for the first failure, doubling, capped at `capMs`, and never shorter
 * than a server's `Retry-After` (seconds).
 */
export function backoff(attempt: number, capMs: number, retryAfterSeconds: number | null = null): number {
  const exp = FIRST_RETRY_MS * 2 ** Math.min(Math.max(attempt, 1) - 1, 16);
  const half = Math.min(exp, capMs) / 2;
  const delay = half + Math.random() * half;
  return retryAfterSeconds === null ? delay : Math.max(delay, retryAfterSeconds * 1000);
}

/**
 * How long to ask the server to hold a heartbeat (`wait_seconds`), whole
 * seconds: a sixth under the interval (at least a second is left for the
 * network), 0 for an interval too short to hold: 30 s -> 25, 2 s -> 1, 1 s -> 0.
 */
export function heldFor(intervalSeconds: number): number {
  const secs = Math.floor(intervalSeconds);
  return Math.max(secs - Math.max(Math.floor(secs / 6), 1), 0);
}

/**
 * How long to hold the next heartbeat: {@link heldFor} the interval, but
 * leaving room in the lease for the held call's own timeout and one retry,
 * and 0 (a plain heartbeat, then an interval) when that room is under half
 * a full hold, so a short lease never turns into a request every second.
 * With the defaults (30 s interval, 60 s lease, 10 s calls) holds alternate
 * 25 s and 15 s.
 */
export function holdFor(intervalSeconds: number, leaseLeftMs: number, callTimeoutMs: number): number {
  const full = heldFor(intervalSeconds);
  const room = Math.max(Math.floor((leaseLeftMs - 2 * callTimeoutMs) / 1000), 0);
  const hold = Math.min(full, room);
  return hold * 2 < full ? 0 : hold;
}

/**
 * The pause (ms) before the next heartbeat after a 200: none after one the
 * server held (at least half the hold), so the next is held in turn; an
 * interval after a plain one or one answered at once (a server before the
 * waiting heartbeat ignores `wait_seconds`): never a tight loop.
 */
export function nextWait(hold: number, tookMs: number, intervalSeconds: number): number {
  return hold > 0 && tookMs >= (hold * 1000) / 2 ? 0 : intervalSeconds * 1000;
}

/** A monotonic clock in milliseconds. */
export function now(): number {
  return performance.now();
}
