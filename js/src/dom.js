// Small DOM helpers shared by the modules. Text from Python is only ever set with
// textContent / attributes, never parsed as HTML.

/**
 * Create an element: h("div", {class: "cv-x", "data-cv": "y"}, child, "text", ...).
 * Attribute values null/undefined/false are skipped; `true` sets an empty attribute.
 * Children may be nodes, strings/numbers (text nodes), arrays, or null (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  if (!attrs) return el;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = String(v);
    else if (k === "text") el.textContent = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (typeof c === "string" || typeof c === "number") el.appendChild(document.createTextNode(String(c)));
    else el.appendChild(c);
  }
  return el;
}

/** Subscribe `cb` to `event` on an anywidget model; returns the unsubscribe function. */
export function listen(model, event, cb) {
  model.on(event, cb);
  return () => model.off(event, cb);
}

/** addEventListener that returns its own removal. */
export function on(target, type, cb, opts) {
  target.addEventListener(type, cb, opts);
  return () => target.removeEventListener(type, cb, opts);
}

/** A bag of cleanup functions run (once each, newest first) by dispose(). */
export class Disposer {
  constructor() {
    this.fns = [];
  }
  add(fn) {
    if (typeof fn === "function") this.fns.push(fn);
    return fn;
  }
  dispose() {
    const fns = this.fns.splice(0).reverse();
    for (const fn of fns) {
      try {
        fn();
      } catch (e) {
        console.error("cnnvis_widgets: cleanup failed", e);
      }
    }
  }
}

/** Format a number for display: integers as is, others with 4 significant digits. */
export function fmt(v) {
  if (typeof v !== "number") return v === null || v === undefined ? "" : String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

let uid = 0;
/** A document-unique id (several views of one model may coexist). */
export function uniqueId(prefix = "cv") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** Loose membership used by visible_when: 3 matches "3" (select values may be ints or strs). */
export function includesLoose(list, v) {
  if (!Array.isArray(list)) return false;
  return list.some((x) => x === v || String(x) === String(v));
}
