/**
 * A stable, privacy-preserving device fingerprint: the operating system's
 * machine id, hashed with SHA-256 under an application-chosen salt, so the
 * server never sees a raw hardware id and two vendors' apps on one machine
 * produce unrelated fingerprints. The same value as the Rust and Python
 * clients' `machine_fingerprint` for the same `app` on the same machine.
 */

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The salted hash itself: 32 hex characters. */
export function fingerprintOf(app: string, machineId: string): string {
  const data = `keyseat-fingerprint-v1\0${app}\0${machineId}`;
  return createHash('sha256').update(data, 'utf8').digest().subarray(0, 16).toString('hex');
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'], windowsHide: true });
  } catch {
    return '';
  }
}

/** The OS machine id: /etc/machine-id (Linux), IOPlatformUUID (macOS), MachineGuid (Windows); `null` if none. */
export function machineId(): string | null {
  for (const path of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    try {
      const text = readFileSync(path, 'utf8').trim();
      if (text) return text;
    } catch {
      // try the next
    }
  }
  if (process.platform === 'darwin') {
    const line = run('ioreg', ['-rd1', '-c', 'IOPlatformExpertDevice'])
      .split('\n')
      .find((l) => l.includes('IOPlatformUUID'));
    return line?.split('"')[3] ?? null;
  }
  if (process.platform === 'win32') {
    const line = run('reg', ['query', 'HKLM\\SOFTWARE\\Microsoft\\Cryptography', '/v', 'MachineGuid'])
      .split(/\r?\n/)
      .find((l) => l.includes('MachineGuid'));
    return line?.trim().split(/\s+/).pop() ?? null;
  }
  return null;
}

/**
 * The fingerprint of this machine for an application (`app` is any stable
 * string of the vendor's, e.g. `"com.example.solver"`), or `null` if the
 * system offers no machine id. 32 hex characters.
 */
export function machineFingerprint(app: string): string | null {
  const id = machineId();
  return id === null ? null : fingerprintOf(String(app), id);
}
