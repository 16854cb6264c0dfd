// A stand-in for anywidget's model: get/set/on/off/save_changes/send, emitting
// `change:<trait>` on set (like Backbone) and `msg:custom` via emitCustom().

import { vi } from "vitest";

function same(a, b) {
  if (a === b) return true;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b) || a instanceof ArrayBuffer || b instanceof ArrayBuffer) return false;
  try {
    return JSON.stringify(a) === JSON.stringify(b) && typeof a === "object" && typeof b === "object";
  } catch {
    return false;
  }
}

export const DEFAULTS = {
  title: "Test widget",
  controls: [],
  panels: [],
  running: false,
  step: 0,
  total_steps: 0,
  error: "",
  status: "",
  image: null,
  history: [],
  run_id: 0,
};

export class FakeModel {
  constructor(state = {}) {
    this.state = { ...DEFAULTS, ...state };
    this.handlers = new Map();
    this.sent = []; // messages from JS (model.send)
    this.writes = []; // [trait, value] written by JS and saved
    this.pendingSets = [];
    this.saves = 0;
  }

  get(key) {
    return this.state[key];
  }

  /** JS-side set (what controls call); recorded in `writes` when save_changes() follows. */
  set(key, value) {
    this.pendingSets.push([key, value]);
    this._assign(key, value);
  }

  save_changes() {
    this.saves += 1;
    this.writes.push(...this.pendingSets);
    this.pendingSets = [];
  }

  /** A change coming from Python (not recorded as a JS write). */
  py(key, value) {
    this._assign(key, value);
  }

  _assign(key, value) {
    const old = this.state[key];
    this.state[key] = value;
    if (!same(old, value)) this.emit(`change:${key}`, this, value);
  }

  on(event, cb) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(cb);
  }

  off(event, cb) {
    const set = this.handlers.get(event);
    if (set) set.delete(cb);
  }

  emit(event, ...args) {
    for (const cb of [...(this.handlers.get(event) || [])]) cb(...args);
  }

  /** Python's self.send(content, buffers): buffers arrive as DataView. */
  emitCustom(msg, buffers = []) {
    this.emit("msg:custom", msg, buffers.map((b) => (b instanceof DataView ? b : new DataView(b.buffer ?? b))));
  }

  send(msg) {
    this.sent.push(msg);
  }

  listenerCount(event) {
    if (event) return (this.handlers.get(event) || new Set()).size;
    let n = 0;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }

  writesOf(trait) {
    return this.writes.filter(([k]) => k === trait).map(([, v]) => v);
  }
}

/** Dispatch a DOM event of `type` on `el` (bubbling). */
export function fire(el, type) {
  el.dispatchEvent(new Event(type, { bubbles: true }));
}

/** Set an <input>'s value and dispatch `input` (a drag step). */
export function dragTo(input, value) {
  input.value = String(value);
  fire(input, "input");
}

/** Finish a drag: dispatch `change` (the release). */
export function release(input) {
  fire(input, "change");
}

/** Small PNG-like bytes (just the magic number plus padding). */
export function pngBytes(tag = 0) {
  return new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, tag, 1, 2, 3]);
}

export function jpegBytes(tag = 0) {
  return new Uint8Array([0xff, 0xd8, 0xff, 0xe0, tag, 1, 2, 3]);
}

/** Spy on URL.createObjectURL: the returned list collects every Blob it is given (object URLs
 * are still made). Undone by vi.restoreAllMocks(). */
export function recordBlobs() {
  const blobs = [];
  const orig = URL.createObjectURL.bind(URL);
  vi.spyOn(URL, "createObjectURL").mockImplementation((b) => {
    blobs.push(b);
    return orig(b);
  });
  return blobs;
}
