// Test helpers: a real `keyseat serve` process (port 0, temp database,
// short intervals), keys made through its admin API, and timings printed
// for the summary. No mock of the server anywhere.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const ADMIN_TOKEN = 'typescript-client-tests-admin-token-0123456789';

export function keyseatBin() {
  return process.env.KEYSEAT_BIN || join(REPO, 'target', 'debug', 'keyseat');
}

/** The environment without KEYSEAT_* (so the flags alone decide). */
export function cleanEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KEYSEAT_')));
}

/** Prints a measured timing (collected by run-tests.sh from the output). */
export function measure(line) {
  console.log(`# timing: ${line}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One `keyseat serve` on a temp database; restartable on the same file and port. */
export class Server {
  constructor({ interval = 1, timeout = 3 } = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'keyseat-ts-'));
    this.db = join(this.dir, 'k.db');
    this.interval = interval;
    this.timeout = timeout;
    this.proc = null;
    this.port = 0;
    this.url = '';
    this.log = [];
  }

  static async start(options) {
    return new Server(options).start();
  }

  start(port = 0) {
    const args = ['serve', '--listen', `127.0.0.1:${port}`, '--database', this.db, '--admin-token', ADMIN_TOKEN,
      '--heartbeat-interval-seconds', String(this.interval), '--session-timeout-seconds', String(this.timeout),
      '--rate-limits', 'off'];
    const proc = spawn(keyseatBin(), args, { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    return new Promise((resolve, reject) => {
      let buffered = '';
      let ready = false;
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`keyseat serve did not get ready:\n${this.log.join('\n')}`));
      }, 20000);
      proc.on('error', (e) => { clearTimeout(timer); reject(e); });
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`keyseat serve exited with ${code}:\n${this.log.join('\n')}`));
      });
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (chunk) => {
        buffered += chunk;
        const lines = buffered.split('\n');
        buffered = lines.pop();
        for (const line of lines) {
          this.log.push(line);
          const m = /listening on (http:\/\/[0-9.]+:(\d+))/.exec(line);
          if (m && !ready) {
            ready = true;
            this.url = m[1];
            this.port = Number(m[2]);
            clearTimeout(timer);
            resolve(this);
          }
        }
      });
    });
  }

  /** SIGTERM, then wait; resolves to the exit code. */
  stop() {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null) return Promise.resolve(proc?.exitCode ?? 0);
    proc.removeAllListeners('exit');
    return new Promise((resolve) => {
      proc.on('exit', (code) => resolve(code));
      proc.kill('SIGTERM');
    });
  }

  async restart() {
    await this.stop();
    await this.start(this.port);
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A plain HTTP call with fetch, independent of the package under test. */
  async call(method, path, body, admin = false) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (admin) headers.authorization = `Bearer ${ADMIN_TOKEN}`;
    const res = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return [res.status, text ? JSON.parse(text) : null];
  }

  async createKey(fields = {}) {
    const [status, body] = await this.call('POST', '/api/admin/keys', fields, true);
    if (status !== 201) throw new Error(`creating a key: ${status} ${JSON.stringify(body)}`);
    return body;
  }

  async key(fields = {}) {
    return (await this.createKey(fields)).access_key;
  }

  async liveSessions(accessKey) {
    const [status, body] = await this.call('POST', '/api/session/status', { access_key: accessKey });
    if (status !== 200) throw new Error(`status: ${status} ${JSON.stringify(body)}`);
    return body.sessions;
  }

  /** What `keyseat signing-key show --pin` prints for this database. */
  pinnedKey() {
    return execFileSync(keyseatBin(), ['--database', this.db, 'signing-key', 'show', '--pin'], {
      env: cleanEnv(), encoding: 'utf8', timeout: 30000,
    }).trim();
  }
}

/** Waits until `predicate()` holds, polling every 20 ms, at most `limitMs`. */
export async function until(predicate, limitMs = 5000, what = 'the condition') {
  const deadline = performance.now() + limitMs;
  for (;;) {
    if (await predicate()) return;
    if (performance.now() > deadline) throw new Error(`never reached ${what}`);
    await sleep(20);
  }
}
