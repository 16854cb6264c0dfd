// Generic controls, drawn from the `controls` trait (see js/PROTOCOL.md, "Control spec").
// Every control writes its trait with model.set(trait, v); model.save_changes() and follows
// the trait when Python (or another view) changes it.

import { h, listen, on, Disposer, fmt, uniqueId, includesLoose } from "./dom.js";
import { toBytes } from "./codecs.js";

/** Sliders write at most once per this many ms while dragging (and always on release). */
export const THROTTLE_MS = 100;
/** Resolution of a log-scale slider (positions between min and max). */
export const LOG_STEPS = 1000;
/** Largest file an `upload` control sends (spec `max_bytes` overrides): the Jupyter server's
 * websocket refuses messages over 10 MiB by default and would drop the connection. */
export const UPLOAD_MAX_BYTES = 10_000_000;

const now = () => Date.now();

/** Normalize an options list: [[label, value], ...], [{label, value}], or plain values. */
export function normalizeOptions(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const o of list) {
    if (Array.isArray(o)) {
      if (o.length >= 2) out.push({ label: String(o[0]), value: o[1] });
      else if (o.length === 1) out.push({ label: String(o[0]), value: o[0] });
    } else if (o !== null && typeof o === "object") {
      const value = "value" in o ? o.value : o.label;
      out.push({ label: String("label" in o ? o.label : value), value });
    } else if (o !== null && o !== undefined) {
      out.push({ label: String(o), value: o });
    }
  }
  return out;
}

/** Does an option match a filter query? Every whitespace-separated token must appear in the
 * label or in the value (so "207" finds class 207 and "golden ret" finds "golden retriever"). */
export function matchesQuery(opt, query) {
  const q = String(query || "").trim().toLowerCase();
  if (!q) return true;
  const hay = `${opt.label}\u0000${String(opt.value)}`.toLowerCase();
  return q.split(/\s+/).every((tok) => hay.includes(tok));
}

function sameValue(a, b) {
  return a === b || (a !== null && b !== null && a !== undefined && b !== undefined && String(a) === String(b));
}

function finite(...vals) {
  for (const v of vals) {
    if (typeof v === "number" && Number.isFinite(v)) return v;
  }
  return undefined;
}

function roundSig(v, digits) {
  if (v === 0 || !Number.isFinite(v)) return v;
  return Number(v.toPrecision(digits));
}

function clean(v) {
  // Remove binary floating-point noise (0.30000000000000004 -> 0.3).
  return Number.isFinite(v) ? Number(v.toPrecision(12)) : v;
}

/** Denominator of the `"format": "fraction255"` display (pixel units of 8-bit images). */
export const FRACTION_DEN = 255;

/** Format a control value: with `format: "fraction255"`, multiples of 1/255 read `k/255`. */
export function formatValue(v, format) {
  if (format === "fraction255" && typeof v === "number" && Number.isFinite(v)) {
    const k = Math.round(v * FRACTION_DEN);
    if (k === 0 && v === 0) return "0";
    if (Math.abs(v * FRACTION_DEN - k) < 1e-6) return `${k}/${FRACTION_DEN}`;
  }
  return fmt(v);
}

/** Parse a typed number: "0.05", "1e-3", or a fraction "4/255" (exact k/255 when the
 * denominator is 255). NaN when it is neither. */
export function parseNumber(raw) {
  const s = String(raw ?? "").trim();
  if (!s) return NaN;
  const m = /^([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*\/\s*((?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$/i.exec(s);
  if (m) {
    const a = Number(m[1]);
    const b = Number(m[2]);
    return b !== 0 && Number.isFinite(a) && Number.isFinite(b) ? a / b : NaN;
  }
  return /^[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$/i.test(s) ? Number(s) : NaN;
}

/** Map a log slider position in [0, LOG_STEPS] to a value in [min, max]. */
export function logPosToValue(pos, min, max, step) {
  const lo = Math.log10(Math.max(min, Number.MIN_VALUE));
  const hi = Math.log10(Math.max(max, min, Number.MIN_VALUE));
  const p = Math.min(Math.max(Number(pos) / LOG_STEPS, 0), 1);
  let v = Math.pow(10, lo + p * (hi - lo));
  v = roundSig(v, 3);
  if (typeof step === "number" && step > 0) v = clean(Math.round(v / step) * step);
  return Math.min(Math.max(v, min), max);
}

/** Map a value to the nearest log slider position in [0, LOG_STEPS]. */
export function logValueToPos(v, min, max) {
  const lo = Math.log10(Math.max(min, Number.MIN_VALUE));
  const hi = Math.log10(Math.max(max, min, Number.MIN_VALUE));
  if (!(v > 0) || hi <= lo) return 0;
  const p = (Math.log10(v) - lo) / (hi - lo);
  return Math.round(Math.min(Math.max(p, 0), 1) * LOG_STEPS);
}

function write(model, trait, v) {
  model.set(trait, v);
  model.save_changes();
}

/** Current [min, max] of a control, following min_trait / max_trait when given. */
function bounds(model, spec) {
  const min = finite(spec.min_trait ? model.get(spec.min_trait) : undefined, spec.min);
  let max = finite(spec.max_trait ? model.get(spec.max_trait) : undefined, spec.max);
  if (min !== undefined && max !== undefined && max < min) max = min;
  return { min, max };
}

function boundTraits(spec) {
  return [spec.min_trait, spec.max_trait].filter((t) => typeof t === "string" && t);
}

// ---------------------------------------------------------------- individual controls
// Each builder gets (model, spec, d: Disposer, id) and returns {el, refresh} where refresh()
// re-reads the model (value, bounds, options). Builders register their own listeners on d.

/** Apply a typed value on Enter (as blur does), without waiting for the host's own handling. */
function applyOnEnter(d, input, apply) {
  d.add(
    on(input, "keydown", (e) => {
      if (e.key === "Enter" && !e.isComposing) {
        e.preventDefault();
        apply();
      }
    }),
  );
}

function buildSlider(model, spec, d, id) {
  const trait = spec.trait;
  const log = Boolean(spec.log);
  const format = typeof spec.format === "string" ? spec.format : "";
  const input = h("input", { type: "range", id, class: "cv-range", "data-cv-control": trait });
  // A formatted slider (fraction255) gets a readout the user can type into ("4/255").
  const editable = format === "fraction255";
  const readout = editable
    ? h("input", {
        type: "text",
        class: "cv-readout cv-readout-edit",
        "data-cv-readout": trait,
        inputmode: "decimal",
        spellcheck: "false",
        autocomplete: "off",
        "aria-label": `${spec.label || trait} (type a value, e.g. 4/255)`,
      })
    : h("output", { class: "cv-readout", for: id, "data-cv-readout": trait });
  let lastWriteAt = -Infinity;
  let written = new Set(); // values this control wrote during the current drag (their echoes)
  let timer = null;
  let pending;
  let dragging = false;
  let stopWindowListen = null;

  const range = () => {
    const b = bounds(model, spec);
    const min = b.min ?? (log ? 1e-3 : 0);
    const max = b.max ?? (log ? 1 : 100);
    return { min, max: Math.max(max, min) };
  };
  const linStep = (min, max) => {
    if (typeof spec.step === "number" && spec.step > 0) return spec.step;
    if (Number.isInteger(min) && Number.isInteger(max)) return 1;
    return (max - min) / 100 || 1;
  };
  const fromInput = () => {
    const { min, max } = range();
    if (log) return logPosToValue(input.value, min, max, spec.step);
    const step = linStep(min, max);
    let v = Number(input.value);
    if (Number.isInteger(step) && Number.isInteger(min)) v = Math.round(v);
    return clean(Math.min(Math.max(v, min), max));
  };
  const showValue = (v) => {
    const text = formatValue(v, format);
    if (editable) {
      if (readout.ownerDocument.activeElement !== readout || !readout.dataset.typing) readout.value = text;
    } else readout.textContent = text;
    input.setAttribute("data-value", v === undefined || v === null ? "" : String(v));
    input.setAttribute("aria-valuetext", text);
  };
  const place = (v) => {
    const { min, max } = range();
    if (typeof v === "number") input.value = String(log ? logValueToPos(v, min, max) : v);
  };
  const refresh = () => {
    const { min, max } = range();
    if (log) {
      input.min = "0";
      input.max = String(LOG_STEPS);
      input.step = "1";
    } else {
      input.min = String(min);
      input.max = String(max);
      input.step = String(linStep(min, max));
    }
    const v = model.get(trait);
    // While dragging, echoes of the control's own writes are not re-applied (the thumb would
    // jump back); any other value (the kernel refused the value or clamped it) is applied at once.
    if (dragging && (written.has(String(v)) || sameValue(v, pending))) return;
    place(v);
    showValue(v);
  };
  const doWrite = (v) => {
    lastWriteAt = now();
    if (dragging) written.add(String(v));
    write(model, trait, v);
  };
  const cancelTimer = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  const endDrag = () => {
    dragging = false;
    written = new Set();
    if (stopWindowListen) stopWindowListen();
    stopWindowListen = null;
  };

  d.add(
    on(input, "pointerdown", () => {
      dragging = true;
      if (!stopWindowListen) {
        const win = input.ownerDocument.defaultView || globalThis;
        const offUp = on(win, "pointerup", () => setTimeout(endDrag, 0));
        const offCancel = on(win, "pointercancel", endDrag);
        stopWindowListen = () => {
          offUp();
          offCancel();
        };
      }
    }),
  );
  d.add(
    on(input, "input", () => {
      const v = fromInput();
      showValue(v);
      pending = v;
      const since = now() - lastWriteAt;
      if (since >= THROTTLE_MS) {
        cancelTimer();
        if (!sameValue(v, model.get(trait))) doWrite(v);
      } else if (timer === null) {
        timer = setTimeout(() => {
          timer = null;
          if (pending !== undefined && !sameValue(pending, model.get(trait))) doWrite(pending);
        }, THROTTLE_MS - since);
      }
    }),
  );
  // "change" fires on release (mouse/touch) and after keyboard moves: always write the final value.
  d.add(
    on(input, "change", () => {
      cancelTimer();
      endDrag();
      const v = fromInput();
      pending = undefined;
      if (!sameValue(v, model.get(trait))) doWrite(v);
      refresh();
    }),
  );
  if (editable) {
    const apply = () => {
      delete readout.dataset.typing;
      const raw = readout.value;
      let v = parseNumber(raw);
      if (!Number.isFinite(v)) {
        refresh();
        return;
      }
      const { min, max } = range();
      v = Math.min(Math.max(v, min), max);
      if (!sameValue(v, model.get(trait))) doWrite(v);
      refresh();
    };
    d.add(on(readout, "input", () => (readout.dataset.typing = "1")));
    d.add(on(readout, "change", apply));
    d.add(on(readout, "blur", () => readout.dataset.typing && apply()));
    applyOnEnter(d, readout, apply);
  }
  d.add(() => {
    cancelTimer();
    endDrag();
  });
  const wrap = h("div", { class: "cv-slider" }, input, readout);
  return { el: wrap, refresh };
}

function buildNumber(model, spec, d, id) {
  const trait = spec.trait;
  const isInt = spec.kind === "int";
  const format = typeof spec.format === "string" ? spec.format : "";
  // A formatted number (fraction255) is a text box so "4/255" can be typed.
  const input = h("input", {
    type: format ? "text" : "number",
    id,
    class: "cv-number",
    "data-cv-control": trait,
    inputmode: format ? "decimal" : null,
    spellcheck: format ? "false" : null,
  });
  const refresh = () => {
    const { min, max } = bounds(model, spec);
    if (min !== undefined) input.min = String(min);
    else input.removeAttribute("min");
    if (max !== undefined) input.max = String(max);
    else input.removeAttribute("max");
    if (!format) input.step = typeof spec.step === "number" && spec.step > 0 ? String(spec.step) : isInt ? "1" : "any";
    const v = model.get(trait);
    input.value = v === null || v === undefined ? "" : format ? formatValue(v, format) : String(v);
  };
  const apply = () => {
    let v = parseNumber(input.value);
    if (!Number.isFinite(v)) {
      refresh();
      return;
    }
    if (isInt) v = Math.round(v);
    // No clamping to min/max here: the kernel is the one judge of a typed value. A value it
    // refuses comes back as its message in the error line and the kernel's value in the box,
    // instead of being silently replaced by the nearest bound.
    input.value = format ? formatValue(v, format) : String(v);
    if (!sameValue(v, model.get(trait)) || typeof model.get(trait) !== "number") write(model, trait, v);
  };
  d.add(on(input, "change", apply));
  applyOnEnter(d, input, apply);
  return { el: input, refresh };
}

function optionSource(model, spec) {
  if (typeof spec.options_trait === "string" && spec.options_trait) return normalizeOptions(model.get(spec.options_trait));
  return normalizeOptions(spec.options);
}

/** A function that returns the control's options when they differ (by label and value) from
 * the ones it returned last, else null: a list is redrawn only when it changed. */
function newOptions(model, spec) {
  let key = null;
  return () => {
    const next = optionSource(model, spec);
    const nextKey = JSON.stringify(next.map((o) => [o.label, o.value]));
    if (nextKey === key) return null;
    key = nextKey;
    return next;
  };
}

function fillSelect(select, opts) {
  select.replaceChildren(...opts.map((o) => h("option", { value: String(o.value), title: o.label, text: o.label })));
}

/** Select the option of value v; the select's title shows the chosen label whole (on hover). */
function selectValue(select, opts, v) {
  const i = opts.findIndex((o) => sameValue(o.value, v));
  select.selectedIndex = i;
  if (i >= 0) select.title = opts[i].label;
  else select.removeAttribute("title");
}

function buildSelect(model, spec, d, id) {
  const trait = spec.trait;
  const select = h("select", { id, class: "cv-select", "data-cv-control": trait });
  let opts = [];
  const changed = newOptions(model, spec);
  const refresh = () => {
    const next = changed();
    if (next) {
      opts = next;
      fillSelect(select, opts);
    }
    selectValue(select, opts, model.get(trait));
  };
  d.add(
    on(select, "change", () => {
      const o = opts[select.selectedIndex];
      if (o && !sameValue(o.value, model.get(trait))) write(model, trait, o.value);
    }),
  );
  return { el: select, refresh };
}

function buildSearch(model, spec, d, id) {
  const trait = spec.trait;
  const filter = h("input", {
    type: "search",
    id,
    class: "cv-filter",
    placeholder: "Filter\u2026",
    autocomplete: "off",
    spellcheck: "false",
    "data-cv-search": trait,
    "aria-label": `Filter ${spec.label || trait}`,
  });
  const select = h("select", { class: "cv-select cv-list", size: String(spec.size || 6), "data-cv-control": trait, "aria-label": spec.label || trait });
  const count = h("span", { class: "cv-count" });
  const current = h("div", { class: "cv-current", "data-cv-current": trait });
  let all = [];
  const changed = newOptions(model, spec);
  let shown = [];
  const current_label = () => {
    const v = model.get(trait);
    const o = all.find((x) => sameValue(x.value, v));
    return o ? o.label : v === null || v === undefined ? "" : String(v);
  };
  const renderList = () => {
    shown = all.filter((o) => matchesQuery(o, filter.value));
    fillSelect(select, shown);
    selectValue(select, shown, model.get(trait));
    count.textContent = `${shown.length} of ${all.length}`;
    select.setAttribute("data-count", String(shown.length));
  };
  const refresh = () => {
    const next = changed();
    if (next) {
      all = next;
      renderList();
    } else {
      selectValue(select, shown, model.get(trait));
    }
    current.textContent = current_label();
  };
  const choose = (o) => {
    if (!o) return;
    if (!sameValue(o.value, model.get(trait))) write(model, trait, o.value);
    current.textContent = o.label;
  };
  // Filtering down to exactly one match selects it (no Enter or click needed).
  d.add(
    on(filter, "input", () => {
      renderList();
      if (shown.length === 1 && String(filter.value).trim()) choose(shown[0]);
    }),
  );
  d.add(
    on(filter, "keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        choose(shown[select.selectedIndex >= 0 ? select.selectedIndex : 0]);
      } else if (e.key === "ArrowDown" && shown.length) {
        e.preventDefault();
        select.focus();
      }
    }),
  );
  d.add(on(select, "change", () => choose(shown[select.selectedIndex])));
  const el = h("div", { class: "cv-search" }, h("div", { class: "cv-search-row" }, filter, count), select, current);
  return { el, refresh };
}

function buildToggle(model, spec, d) {
  const trait = spec.trait;
  const group = h("div", { class: "cv-toggle", role: "group", "data-cv-control": trait, "aria-label": spec.label || trait });
  let opts = [];
  const changed = newOptions(model, spec);
  let buttons = [];
  const refresh = () => {
    const next = changed();
    if (next) {
      opts = next;
      buttons = opts.map((o) => h("button", { type: "button", class: "cv-toggle-btn", "data-value": String(o.value), text: o.label }));
      group.replaceChildren(...buttons);
    }
    const v = model.get(trait);
    opts.forEach((o, i) => {
      const pressed = sameValue(o.value, v);
      buttons[i].setAttribute("aria-pressed", pressed ? "true" : "false");
      buttons[i].classList.toggle("cv-on", pressed);
    });
  };
  d.add(
    on(group, "click", (e) => {
      const btn = e.target && e.target.closest ? e.target.closest("button") : null;
      const i = buttons.indexOf(btn);
      if (i < 0) return;
      if (!sameValue(opts[i].value, model.get(trait))) write(model, trait, opts[i].value);
      refresh();
    }),
  );
  return { el: group, refresh };
}

function buildCheckbox(model, spec, d, id) {
  const trait = spec.trait;
  const input = h("input", { type: "checkbox", id, class: "cv-checkbox", "data-cv-control": trait });
  const refresh = () => {
    input.checked = Boolean(model.get(trait));
  };
  d.add(on(input, "change", () => write(model, trait, Boolean(input.checked))));
  return { el: input, refresh };
}

function buildText(model, spec, d, id) {
  const trait = spec.trait;
  const input = h("input", { type: "text", id, class: "cv-text", "data-cv-control": trait, spellcheck: "false" });
  const refresh = () => {
    const v = model.get(trait);
    input.value = v === null || v === undefined ? "" : String(v);
  };
  const apply = () => {
    if (input.value !== model.get(trait)) write(model, trait, input.value);
  };
  d.add(on(input, "change", apply));
  applyOnEnter(d, input, apply);
  return { el: input, refresh };
}

/** "12.3 kB" */
export function formatSize(n) {
  if (!(n >= 0)) return "";
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${Number((n / 1e3).toPrecision(3))} kB`;
  return `${Number((n / 1e6).toPrecision(3))} MB`;
}

/** A file's bytes as an ArrayBuffer (Blob.arrayBuffer, else FileReader). */
export function readFileBytes(file) {
  if (typeof file.arrayBuffer === "function") return file.arrayBuffer();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error || new Error("read failed"));
    reader.readAsArrayBuffer(file);
  });
}

/**
 * `upload`: a file input. The chosen file's bytes are set on the bytes trait as a DataView over
 * an ArrayBuffer of exactly the file (ipywidgets sends a view's whole underlying buffer, so the
 * view must cover all of it; this is also the form in which bytes traits arrive from Python),
 * its name on `name_trait`, then one save_changes(). Nothing leaves the machine but the comm.
 */
function buildUpload(model, spec, d, id) {
  const trait = spec.trait;
  const nameTrait = typeof spec.name_trait === "string" && spec.name_trait ? spec.name_trait : "";
  const maxBytes = typeof spec.max_bytes === "number" && spec.max_bytes > 0 ? spec.max_bytes : UPLOAD_MAX_BYTES;
  const input = h("input", { type: "file", id, class: "cv-file", accept: spec.accept || null, "data-cv-control": trait });
  const info = h("div", { class: "cv-upload-info", "data-cv-upload": trait, role: "status" });
  let message = ""; // a problem with the last choice (shown until the trait changes)
  let token = 0;
  let closed = false;
  const refresh = () => {
    const bytes = toBytes(model.get(trait));
    const name = nameTrait ? model.get(nameTrait) : "";
    info.classList.toggle("cv-upload-error", Boolean(message));
    if (message) info.textContent = message;
    else if (!bytes.length) info.textContent = "no file chosen";
    else info.textContent = name ? `${name} (${formatSize(bytes.length)})` : formatSize(bytes.length);
    info.setAttribute("data-size", String(bytes.length));
    // Cleared from Python: forget the chosen file so choosing it again fires "change".
    if (!bytes.length && token === 0 && input.value) input.value = "";
  };
  const fail = (text) => {
    message = text;
    input.value = "";
    refresh();
  };
  d.add(() => {
    closed = true;
  });
  d.add(
    on(input, "change", () => {
      const file = input.files && input.files[0];
      if (!file) return;
      if (file.size > maxBytes) {
        fail(`${file.name}: too large (${formatSize(file.size)}; at most ${formatSize(maxBytes)})`);
        return;
      }
      const mine = ++token;
      message = "";
      info.classList.remove("cv-upload-error");
      info.textContent = `reading ${file.name}…`;
      readFileBytes(file).then(
        (buf) => {
          if (closed || mine !== token) return;
          token = 0;
          let ab = buf;
          if (!(ab instanceof ArrayBuffer)) {
            const b = toBytes(buf);
            ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
          }
          if (nameTrait) model.set(nameTrait, String(file.name || ""));
          model.set(trait, new DataView(ab));
          model.save_changes();
          refresh();
        },
        () => {
          if (closed || mine !== token) return;
          token = 0;
          fail(`${file.name}: could not be read`);
        },
      );
    }),
  );
  // A change of the trait (a new file, or Python clearing it) replaces any old message.
  d.add(
    listen(model, `change:${trait}`, () => {
      message = "";
    }),
  );
  // The native input is visually hidden (its own "No file chosen" text is cut in narrow
  // columns); a button-like label of ours opens it, and `info` says what was chosen.
  const pick = h("label", { class: "cv-btn cv-file-btn", for: id, text: spec.button_label || "Choose file\u2026" });
  const el = h("div", { class: "cv-upload" }, h("div", { class: "cv-upload-row" }, input, pick), info);
  return { el, refresh, traits: nameTrait ? [nameTrait] : [] };
}

/** `button`: sends {type: "action", action}. No trait. */
function buildButton(model, spec, d, id) {
  const action = spec.action === undefined || spec.action === null ? "" : String(spec.action);
  const btn = h("button", {
    type: "button",
    id,
    class: "cv-btn cv-action",
    "data-cv-action": action,
    title: spec.help || null,
    text: String(spec.label ?? action),
  });
  btn.disabled = !action;
  d.add(on(btn, "click", () => model.send({ type: "action", action })));
  return { el: btn, refresh: () => {} };
}

const BUILDERS = {
  slider: buildSlider,
  int: buildNumber,
  float: buildNumber,
  select: buildSelect,
  search: buildSearch,
  toggle: buildToggle,
  checkbox: buildCheckbox,
  text: buildText,
  upload: buildUpload,
  button: buildButton,
};

/** Build one control row (label + element) for a spec; listeners go on d. */
export function buildControl(model, spec, d) {
  const id = uniqueId("cv-ctl");
  const kind = spec.kind || "text";
  const builder = BUILDERS[kind];
  const labelText = String(spec.label ?? spec.trait ?? spec.action ?? "");
  const isButton = kind === "button";
  const label = isButton ? null : h("label", { class: "cv-label", for: kind === "toggle" ? null : id, title: labelText, text: labelText });
  const row = h("div", { class: `cv-control cv-kind-${String(kind)}`, "data-cv-row": spec.trait || null, title: spec.help || null });
  if (!builder) {
    row.append(label, h("span", { class: "cv-unsupported", text: `unsupported control kind: ${String(kind)}` }));
    return { row, refresh: () => {}, traits: [] };
  }
  const ctl = builder(model, spec, d, id);
  row.append(...[label, ctl.el].filter(Boolean));
  if (spec.help && !isButton) row.append(h("div", { class: "cv-help", text: spec.help }));
  const traits = [spec.trait, ...boundTraits(spec), ...(ctl.traits || [])];
  if (typeof spec.options_trait === "string" && spec.options_trait) traits.push(spec.options_trait);
  for (const t of new Set(traits)) if (typeof t === "string" && t) d.add(listen(model, `change:${t}`, ctl.refresh));
  ctl.refresh();
  return { row, refresh: ctl.refresh };
}

/**
 * The controls column. Renders `model.get("controls")` in groups (titled, in order of first
 * appearance) and re-renders when `controls` changes. `el` is the container; call dispose().
 */
export class ControlsView {
  constructor(model) {
    this.model = model;
    this.el = h("div", { class: "cv-controls", "data-cv": "controls" });
    this.d = new Disposer();
    this.build = new Disposer();
    this.openState = new Map(); // group name -> open, as the user left it (kept across re-renders)
    this.d.add(listen(model, "change:controls", () => this.render()));
    this.render();
  }

  render() {
    this.build.dispose();
    const specs = this.model.get("controls");
    const groups = new Map();
    const order = [];
    for (const spec of Array.isArray(specs) ? specs : []) {
      if (!spec || typeof spec !== "object") continue;
      // Every control edits a trait, except buttons (they send an action).
      if (spec.kind !== "button" && (typeof spec.trait !== "string" || !spec.trait)) continue;
      const name = typeof spec.group === "string" ? spec.group : "";
      if (!groups.has(name)) {
        groups.set(name, { name, rows: [], collapsed: false });
        order.push(name);
      }
      const g = groups.get(name);
      if (spec.collapsed === true) g.collapsed = true;
      const { row } = buildControl(this.model, spec, this.build);
      g.rows.push(row);
      const vw = spec.visible_when;
      if (vw && typeof vw.trait === "string") {
        const update = () => {
          row.hidden = !includesLoose(vw.in, this.model.get(vw.trait));
          refreshGroups();
        };
        this.build.add(listen(this.model, `change:${vw.trait}`, update));
        row.hidden = !includesLoose(vw.in, this.model.get(vw.trait));
      }
    }
    // Titled groups are <details>: open unless a control of theirs says `collapsed: true`
    // (advanced settings), and as the user left them after that.
    for (const g of groups.values()) {
      if (!g.name) {
        g.box = h("div", { class: "cv-group cv-group-untitled", "data-cv-group": "" }, ...g.rows);
        continue;
      }
      const open = this.openState.has(g.name) ? this.openState.get(g.name) : !g.collapsed;
      const summary = h("summary", { class: "cv-group-title", text: g.name });
      g.box = h("details", { class: "cv-group", "data-cv-group": g.name, open }, summary, h("div", { class: "cv-group-body" }, ...g.rows));
      const box = g.box;
      this.build.add(on(box, "toggle", () => this.openState.set(g.name, box.open)));
    }
    // A group whose controls are all hidden is hidden too (title included).
    const refreshGroups = () => {
      for (const g of groups.values()) g.box.hidden = g.rows.every((r) => r.hidden);
    };
    refreshGroups();
    this.el.replaceChildren(...order.map((n) => groups.get(n).box));
  }

  dispose() {
    this.build.dispose();
    this.d.dispose();
    this.el.replaceChildren();
  }
}
