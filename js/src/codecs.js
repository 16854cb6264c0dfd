// Bytes helpers. anywidget hands binary traits and message buffers to JS as DataView
// (sometimes ArrayBuffer or a typed array); other hosts (marimo) have delivered base64 strings,
// JSON-serialized typed arrays ({"0": 137, "1": 80, ...}) or no buffers at all. Everything here
// normalizes to Uint8Array; what cannot be read is empty bytes, never an exception.

/**
 * View any bytes-like value as a Uint8Array (no copy). Accepts DataView, ArrayBuffer,
 * any typed array, a plain array of numbers, or a base64 string. Returns an empty array for
 * null/undefined/unknown values.
 */
export function toBytes(value) {
  if (value === null || value === undefined) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  // ArrayBuffer from another realm (iframes, test environments): duck-type it.
  if (typeof value === "object" && typeof value.byteLength === "number" && typeof value.slice === "function" && !Array.isArray(value)) {
    try {
      return new Uint8Array(value);
    } catch {
      /* fall through */
    }
  }
  if (Array.isArray(value)) return Uint8Array.from(value);
  if (typeof value === "string") return base64ToBytes(value);
  if (typeof value === "object" && value.buffer !== undefined && value.buffer !== value) return toBytes(value.buffer);
  if (typeof value === "object") return indexedBytes(value);
  return new Uint8Array(0);
}

/** A typed array that went through JSON: {"0": b0, "1": b1, ...}; empty when it is not one. */
function indexedBytes(obj) {
  const keys = Object.keys(obj);
  if (!keys.length || !("0" in obj)) return new Uint8Array(0);
  const n = keys.length;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = obj[i];
    if (typeof v !== "number" || !(v >= 0 && v <= 255)) return new Uint8Array(0);
    out[i] = v;
  }
  return out;
}

/**
 * The first binary buffer of a custom message as non-empty Uint8Array, or null when the host
 * delivered none. Accepts the buffers argument in any form seen (array of DataView /
 * ArrayBuffer / typed arrays / base64 strings, a single buffer), and falls back to buffers
 * carried inside the message itself (`msg.buffers`).
 */
export function firstBuffer(buffers, msg) {
  for (const src of [buffers, msg && typeof msg === "object" ? msg.buffers : undefined]) {
    if (src === null || src === undefined) continue;
    const first = Array.isArray(src) ? src[0] : typeof src === "object" && !ArrayBuffer.isView(src) && !(src instanceof ArrayBuffer) && "0" in src && typeof src[0] !== "number" ? src[0] : src;
    const b = toBytes(first);
    if (b.length) return b;
  }
  return null;
}

/** Decode base64 (tolerates a data: URL prefix); returns empty bytes when it is not base64. */
export function base64ToBytes(s) {
  const comma = s.startsWith("data:") ? s.indexOf(",") : -1;
  const b64 = comma >= 0 ? s.slice(comma + 1) : s;
  try {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return new Uint8Array(0);
  }
}

/** Guess an image MIME type from the magic number; `fallback` when unknown. */
export function sniffImageMime(bytes, fallback = "image/png") {
  const b = toBytes(bytes);
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "image/png";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
  if (b.length >= 6 && b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46) return "image/gif";
  if (b.length >= 12 && b[0] === 0x52 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x46 && b[8] === 0x57 && b[9] === 0x45 && b[10] === 0x42 && b[11] === 0x50) return "image/webp";
  return fallback;
}

/** Wrap bytes in a Blob (copies them, so the message buffer may be released). */
export function bytesToBlob(value, mime) {
  const b = toBytes(value);
  return new Blob([b], { type: mime || sniffImageMime(b) });
}
