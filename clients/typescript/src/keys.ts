/**
 * The access key format, checked locally so a typo fails without a request
 * (docs/api.md, "Access keys"): `ks_` + 32 random base62 characters + 6
 * base62 characters of the CRC32 (IEEE, as in zlib) of everything before
 * them, most significant digit first, left-padded with `0`. The same
 * check, and the same sentences, as the server and the Rust and Python
 * clients.
 */

import { InvalidKeyFormat } from './errors.js';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const KEY_TAG = 'ks_';
const RANDOM_LEN = 32;
const CHECKSUM_LEN = 6;
/** Length of a whole access key (41). */
export const KEY_LEN = KEY_TAG.length + RANDOM_LEN + CHECKSUM_LEN;
const PREFIX_LEN = 8;

const SHAPE = 'an access key is `ks_` followed by 38 letters and digits';
const ALPHABET = 'an access key contains only letters and digits after `ks_`';
const CHECKSUM = "the access key's checksum does not match (is there a typo?)";

// zlib's CRC32 table (polynomial 0xEDB88320, reflected). Node's own
// zlib.crc32 arrived only in Node 20.15.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32 (IEEE) of an ASCII string. */
export function crc32(text: string): number {
  let crc = 0xffffffff;
  for (let i = 0; i < text.length; i++) {
    crc = CRC_TABLE[(crc ^ text.charCodeAt(i)) & 0xff]! ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function base62(value: number, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return out;
}

/** The 6-character base62 CRC32 of the first 35 characters of a key. */
export function checksumOf(body: string): string {
  return base62(crc32(body), CHECKSUM_LEN);
}

/**
 * The key with surrounding whitespace removed, or throws
 * {@link InvalidKeyFormat} naming what is wrong (no request is sent).
 */
export function checkAccessKey(text: unknown): string {
  if (typeof text !== 'string') throw new InvalidKeyFormat('the access key must be a string');
  const key = text.trim();
  if (key.length !== KEY_LEN || !key.startsWith(KEY_TAG)) throw new InvalidKeyFormat(SHAPE);
  for (const c of key.slice(KEY_TAG.length)) {
    if (!BASE62.includes(c)) throw new InvalidKeyFormat(ALPHABET);
  }
  const body = key.slice(0, KEY_LEN - CHECKSUM_LEN);
  if (checksumOf(body) !== key.slice(KEY_LEN - CHECKSUM_LEN)) throw new InvalidKeyFormat(CHECKSUM);
  return key;
}

/** Whether `text` is a well-formed access key, checksum included (for an input field). */
export function isAccessKey(text: unknown): boolean {
  try {
    checkAccessKey(text);
    return true;
  } catch {
    return false;
  }
}

/** `ks_` and the first 8 characters: what may be shown and logged. */
export function redact(text: string): string {
  const keep = KEY_TAG.length + PREFIX_LEN;
  return text.length > keep ? `${text.slice(0, keep)}\u2026` : text;
}

/**
 * The prefix a signed answer echoes for what was sent as the key: `ks_`
 * and 8 letters or digits, or `null` where the server echoes `null`.
 */
export function shownPrefix(accessKey: string): string | null {
  const text = accessKey.trim();
  const prefix = text.slice(0, KEY_TAG.length + PREFIX_LEN);
  if (prefix.length === KEY_TAG.length + PREFIX_LEN && prefix.startsWith(KEY_TAG) && /^[A-Za-z0-9]{8}$/.test(prefix.slice(3))) {
    return prefix;
  }
  return null;
}
