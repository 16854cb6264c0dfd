// Panels drawn from the `panels` trait (see js/PROTOCOL.md, "Panel spec"): image, chart, progress
// here; table, bars and text in datapanels.js. The view (view.js) owns the frame-fed data (current
// picture, loss series, progress); panels bound to a trait of their own follow it themselves.

import { h, on, listen, Disposer, fmt } from "./dom.js";
import { toBytes, bytesToBlob, sniffImageMime } from "./codecs.js";
import { TablePanel, BarsPanel, TextPanel } from "./datapanels.js";

// XML namespace identifier required by createElementNS (an identifier, never fetched). Built
// from parts so the bundle carries no URL-looking string (the build is checked for those).
const SVG_NS = ["http:", "", "www.w3.org", "2000", "svg"].join("/");

function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function caption(text) {
  return text ? h("figcaption", { class: "cv-panel-title", text }) : null;
}

// ---------------------------------------------------------------- image

/** The largest double below 1: click fractions stay in [0, 1). */
const BELOW_ONE = 1 - 2 ** -53;

/** Clamp a fraction into [0, 1). */
export function fraction(v) {
  if (!Number.isFinite(v)) return 0;
  return Math.min(Math.max(v, 0), BELOW_ONE);
}

/** The [row, col] of a grid cell under the fractions f = [fx, fy] (both in [0, 1)). */
export function cellAt(f, grid) {
  const r = Math.min(grid.rows - 1, Math.floor(f[1] * grid.rows));
  const c = Math.min(grid.cols - 1, Math.floor(f[0] * grid.cols));
  return [r, c];
}

/** Position of a pointer event as fractions [fx, fy] of the element's box, or null when the
 * element has no size (not laid out). */
export function eventFractions(e, el) {
  const r = el.getBoundingClientRect();
  if (!(r.width > 0 && r.height > 0)) return null;
  return [fraction((e.clientX - r.left) / r.width), fraction((e.clientY - r.top) / r.height)];
}

function sameBytes(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  if (a === b) return true;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A `[rows, cols]` grid spec (both positive integers), or null. */
function gridOf(spec) {
  const g = spec.grid;
  if (!Array.isArray(g) || g.length < 2) return null;
  const rows = Math.floor(Number(g[0]));
  const cols = Math.floor(Number(g[1]));
  return rows >= 1 && cols >= 1 && Number.isFinite(rows) && Number.isFinite(cols) ? { rows, cols } : null;
}

/**
 * `{"kind": "image", "label": ..., "trait"?: ..., "grid"?: [rows, cols]}`: <img data-cv="image">
 * plus a "Download PNG" button. Without `trait` the view feeds it (frames, `image` trait) through
 * setSrc(); with `trait` it shows that bytes trait itself (PNG/JPEG, type sniffed) and owns its
 * object URL. Clicks send {type: "click", panel, trait, x, y} (fractions of the picture).
 */
export class ImagePanel {
  constructor(spec, { onDownload, model, index = 0 } = {}) {
    this.kind = "image";
    this.d = new Disposer();
    this.model = model || null;
    this.index = index;
    this.trait = typeof spec.trait === "string" && spec.trait ? spec.trait : "";
    this.bound = Boolean(this.trait);
    this.grid = gridOf(spec);
    this.url = null; // object URL owned by this panel (bound panels only)
    this.shownBytes = null;
    this.img = h("img", {
      class: "cv-img",
      "data-cv": "image",
      "data-cv-trait": this.trait || null,
      alt: spec.label || this.trait || "image",
      draggable: "false",
    });
    this.img.hidden = true;
    this.cell = h("div", { class: "cv-grid-cell", "data-cv": "grid-cell", "aria-hidden": "true" });
    this.cell.hidden = true;
    this.wrap = h("div", { class: "cv-img-wrap" }, this.img, this.cell);
    this.wrap.hidden = true;
    this.empty = h("div", { class: "cv-empty", text: "no image yet" });
    this.button = h("button", {
      type: "button",
      class: "cv-btn cv-download",
      "data-cv": "download",
      title: "Save the current picture as a PNG file",
      text: "Download PNG",
    });
    this.button.disabled = true;
    this.el = h(
      "figure",
      {
        class: "cv-panel cv-panel-image",
        "data-cv-panel": "image",
        "data-cv-trait": this.trait || null,
        "data-cv-index": String(index),
      },
      caption(spec.label),
      this.box = h("div", { class: "cv-img-box" }, this.wrap, this.empty),
      h("div", { class: "cv-panel-actions" }, this.button),
    );
    // optional display width in CSS pixels (composites of several pictures want more room)
    const width = Number(spec.width);
    if (Number.isFinite(width) && width >= 32 && width <= 4096) {
      this.box.style.width = `${Math.round(width)}px`;
    }
    if (this.grid) {
      this.el.setAttribute("data-grid", `${this.grid.rows}x${this.grid.cols}`);
      this.d.add(on(this.wrap, "pointermove", (e) => this.hover(e)));
      this.d.add(on(this.wrap, "pointerleave", () => (this.cell.hidden = true)));
    }
    this.d.add(on(this.img, "click", (e) => this.click(e)));
    this.d.add(on(this.button, "click", () => onDownload && onDownload(this.img, this)));
    if (this.bound && this.model) {
      this.d.add(listen(this.model, `change:${this.trait}`, () => this.showTrait()));
      this.showTrait();
    }
  }

  /** Show a picture URL, or nothing. Frame-fed panels: the URL is owned by the view. */
  setSrc(url) {
    if (url) {
      if (this.img.getAttribute("src") !== url) this.img.src = url;
      this.img.hidden = false;
      this.wrap.hidden = false;
      this.empty.hidden = true;
      this.button.disabled = false;
    } else {
      this.img.removeAttribute("src");
      this.img.removeAttribute("data-mime");
      this.img.hidden = true;
      this.wrap.hidden = true;
      this.cell.hidden = true;
      this.empty.hidden = false;
      this.button.disabled = true;
    }
  }

  /** While the view waits for the kernel, an empty picture says so instead of "no image yet". */
  setWaiting(waiting) {
    this.empty.textContent = waiting ? "waiting for the kernel\u2026" : "no image yet";
    this.empty.setAttribute("data-waiting", waiting ? "true" : "false");
  }

  /** Bound panels: show the bytes of the trait (skipped when they did not change). */
  showTrait() {
    const bytes = toBytes(this.model.get(this.trait));
    if (sameBytes(bytes, this.shownBytes) || (!bytes.length && !this.shownBytes)) return;
    const old = this.url;
    if (!bytes.length) {
      this.shownBytes = null;
      this.url = null;
      this.setSrc(null);
    } else {
      this.shownBytes = bytes;
      const mime = sniffImageMime(bytes);
      this.url = URL.createObjectURL(bytesToBlob(bytes, mime));
      this.setSrc(this.url);
      this.img.setAttribute("data-mime", mime);
      const url = this.url;
      waitForImage(this.img, 1500).then(() => {
        if (this.url === url) this.markSmall();
      });
    }
    if (old) URL.revokeObjectURL(old);
  }

  /** Small pictures (e.g. 32 px) are enlarged with crisp pixels rather than blurred. */
  markSmall() {
    this.img.classList.toggle("cv-pixelated", this.img.naturalWidth > 0 && this.img.naturalWidth < 128);
  }

  hover(e) {
    if (this.img.hidden) return;
    const f = eventFractions(e, this.img);
    if (!f) return;
    const { rows, cols } = this.grid;
    const [r, c] = cellAt(f, this.grid);
    const s = this.cell.style;
    s.left = `${((c / cols) * 100).toFixed(4)}%`;
    s.top = `${((r / rows) * 100).toFixed(4)}%`;
    s.width = `${(100 / cols).toFixed(4)}%`;
    s.height = `${(100 / rows).toFixed(4)}%`;
    this.cell.setAttribute("data-row", String(r));
    this.cell.setAttribute("data-col", String(c));
    this.cell.hidden = false;
  }

  click(e) {
    if (!this.model || this.img.hidden || !this.img.getAttribute("src")) return;
    const f = eventFractions(e, this.img);
    if (!f) return;
    const msg = { type: "click", panel: this.index, trait: this.trait, x: f[0], y: f[1] };
    if (this.grid) [msg.row, msg.col] = cellAt(f, this.grid);
    this.model.send(msg);
  }

  dispose() {
    this.d.dispose();
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
  }
}

/** Resolve true when the image has decoded, false on error or after timeoutMs. */
export function waitForImage(img, timeoutMs = 1500) {
  return new Promise((resolve) => {
    let done = false;
    const offs = [];
    const finish = (ok) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const off of offs) off();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    if (typeof img.decode === "function") {
      img.decode().then(
        () => finish(true),
        () => finish(false),
      );
    } else if (img.complete && img.naturalWidth > 0) {
      finish(true);
    } else {
      offs.push(on(img, "load", () => finish(true)));
      offs.push(on(img, "error", () => finish(false)));
    }
  });
}

/**
 * Save the picture shown by `img` as a PNG: drawn on a canvas, exported with toBlob and
 * saved through a temporary <a download>. Everything happens in the browser (no network).
 * `track(url)` is called with the temporary object URL so the caller can revoke it.
 * Returns a promise of true when a download was started.
 */
export function downloadPng(img, filename, { track, revokeAfterMs = 10000 } = {}) {
  return new Promise((resolve) => {
    if (!img || !img.getAttribute("src")) return resolve(false);
    const w = img.naturalWidth || img.width;
    const hgt = img.naturalHeight || img.height;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = hgt;
    const ctx = canvas.getContext && canvas.getContext("2d");
    if (!ctx || !w || !hgt) return resolve(false);
    ctx.drawImage(img, 0, 0, w, hgt);
    const save = (blob) => {
      if (!blob) return resolve(false);
      const url = URL.createObjectURL(blob);
      let revoke = () => URL.revokeObjectURL(url);
      if (track) revoke = track(url, revoke) || revoke;
      const a = h("a", { href: url, download: filename, class: "cv-hidden-link" });
      a.style.display = "none";
      (img.ownerDocument.body || img.parentNode).appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => revoke(), revokeAfterMs);
      resolve(true);
    };
    if (typeof canvas.toBlob === "function") canvas.toBlob(save, "image/png");
    else resolve(false);
  });
}

// ---------------------------------------------------------------- chart

const CW = 320; // viewBox size of the chart
const CH = 130;
const PAD = { left: 46, right: 8, top: 8, bottom: 18 };

/** Reduce a long series to <= ~2 points per horizontal pixel, keeping each bucket's min and max. */
export function downsample(points, maxPoints) {
  if (points.length <= maxPoints) return points;
  const buckets = Math.max(1, Math.floor(maxPoints / 2));
  const x0 = points[0][0];
  const span = points[points.length - 1][0] - x0 || 1;
  const out = [];
  let cur = -1;
  let lo = null;
  let hi = null;
  const flush = () => {
    if (lo === null) return;
    if (lo === hi) out.push(lo);
    else if (lo[0] <= hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  };
  for (const p of points) {
    const b = Math.min(buckets - 1, Math.floor(((p[0] - x0) / span) * buckets));
    if (b !== cur) {
      flush();
      cur = b;
      lo = hi = p;
    } else {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
  }
  flush();
  const last = points[points.length - 1];
  if (out[out.length - 1] !== last) out.push(last);
  return out;
}

/**
 * The series of a chart value: `[[x, y], ...]` (one series) or
 * `{"series": [{"name", "points": [[x, y], ...], "dashed"?}], "y_range"?: [lo, hi]}` (several).
 * Returns `{series: [{name, points, dashed}], yRange}`; bad items are dropped, never thrown on.
 */
export function chartSeries(value) {
  const clean = (pts) =>
    (Array.isArray(pts) ? pts : []).filter(
      (p) => Array.isArray(p) && p.length >= 2 && Number.isFinite(Number(p[0])) && p[1] !== null && Number.isFinite(Number(p[1])),
    ).map((p) => [Number(p[0]), Number(p[1])]);
  if (Array.isArray(value)) return { series: [{ name: "", points: clean(value), dashed: false }], yRange: null };
  if (!value || typeof value !== "object" || !Array.isArray(value.series)) return { series: [], yRange: null };
  const series = value.series
    .filter((s) => s && typeof s === "object")
    .map((s) => ({ name: String(s.name ?? ""), points: clean(s.points), dashed: Boolean(s.dashed) }));
  const r = value.y_range;
  const yRange = Array.isArray(r) && r.length === 2 && Number.isFinite(Number(r[0])) && Number.isFinite(Number(r[1])) && Number(r[1]) > Number(r[0]) ? [Number(r[0]), Number(r[1])] : null;
  return { series, yRange };
}

/**
 * `{"kind": "chart", "label": ..., "trait": "history"}`: an SVG line chart of [step, value] points,
 * or of several named series (a legend beneath) when the trait holds `{"series": [...]}`.
 * `"y_range": [lo, hi]` in the spec (or the value) fixes the vertical axis.
 */
export class ChartPanel {
  constructor(spec) {
    this.kind = "chart";
    this.trait = spec.trait || "history";
    this.yRange = chartSeries({ series: [], y_range: spec.y_range }).yRange;
    this.svg = svg("svg", {
      class: "cv-chart",
      viewBox: `0 0 ${CW} ${CH}`,
      role: "img",
      "data-cv": "chart",
      "data-trait": this.trait,
      "data-points": 0,
      "data-series": 0,
    });
    this.svg.setAttribute("aria-label", spec.label || this.trait);
    const x0 = PAD.left;
    const x1 = CW - PAD.right;
    const y0 = PAD.top;
    const y1 = CH - PAD.bottom;
    this.lines = [this.newLine(0)];
    this.svg.append(
      svg("rect", { class: "cv-chart-frame", x: x0, y: y0, width: x1 - x0, height: y1 - y0 }),
      this.lines[0],
      (this.yMax = svg("text", { class: "cv-chart-label", x: x0 - 4, y: y0 + 8, "text-anchor": "end" })),
      (this.yMin = svg("text", { class: "cv-chart-label", x: x0 - 4, y: y1, "text-anchor": "end" })),
      (this.xMin = svg("text", { class: "cv-chart-label", x: x0, y: CH - 4, "text-anchor": "start" })),
      (this.xMax = svg("text", { class: "cv-chart-label", x: x1, y: CH - 4, "text-anchor": "end" })),
    );
    this.line = this.lines[0];
    this.last = h("span", { class: "cv-chart-last" });
    this.legend = h("div", { class: "cv-chart-legend", "data-cv": "chart-legend" });
    this.el = h(
      "figure",
      { class: "cv-panel cv-panel-chart", "data-cv-panel": "chart" },
      h("figcaption", { class: "cv-panel-title" }, spec.label || this.trait, " ", this.last),
      this.svg,
      this.legend,
    );
  }

  newLine(i) {
    return svg("polyline", { class: `cv-chart-line cv-series-${i % 7}`, "data-cv": "chart-line", points: "", fill: "none" });
  }

  /** Draw [[x, y], ...] (sorted by x) or a `{"series": [...]}` value; non-finite points are skipped. */
  draw(value) {
    const { series, yRange } = chartSeries(value);
    this.drawSeries(series, yRange || this.yRange, !Array.isArray(value));
  }

  drawSeries(series, yRange, named) {
    while (this.lines.length < Math.max(1, series.length)) {
      const line = this.newLine(this.lines.length);
      this.lines[this.lines.length - 1].after(line);
      this.lines.push(line);
    }
    while (this.lines.length > Math.max(1, series.length)) this.lines.pop().remove();
    const all = series.flatMap((s) => s.points);
    this.svg.setAttribute("data-points", String(all.length));
    this.svg.setAttribute("data-series", String(series.filter((s) => s.points.length).length));
    this.legend.replaceChildren(
      ...(named
        ? series.map((s, i) =>
            h("span", { class: "cv-chart-key", "data-series": s.name }, h("span", { class: `cv-chart-swatch cv-series-${i % 7}${s.dashed ? " cv-dashed" : ""}` }), s.name),
          )
        : []),
    );
    if (!all.length) {
      for (const l of this.lines) l.setAttribute("points", "");
      for (const t of [this.yMax, this.yMin, this.xMin, this.xMax]) t.textContent = "";
      this.last.textContent = "";
      return;
    }
    let ymin = Infinity;
    let ymax = -Infinity;
    let xa = Infinity;
    let xb = -Infinity;
    for (const p of all) {
      if (p[1] < ymin) ymin = p[1];
      if (p[1] > ymax) ymax = p[1];
      if (p[0] < xa) xa = p[0];
      if (p[0] > xb) xb = p[0];
    }
    let lo = yRange ? Math.min(yRange[0], ymin) : ymin;
    let hi = yRange ? Math.max(yRange[1], ymax) : ymax;
    if (hi === lo) {
      const pad = Math.abs(hi) * 0.1 || 1;
      lo -= pad;
      hi += pad;
    }
    const x0 = PAD.left;
    const x1 = CW - PAD.right;
    const y0 = PAD.top;
    const y1 = CH - PAD.bottom;
    const sx = (x) => (xb === xa ? (x0 + x1) / 2 : x0 + ((x - xa) / (xb - xa)) * (x1 - x0));
    const sy = (y) => y1 - ((y - lo) / (hi - lo)) * (y1 - y0);
    series.forEach((s, i) => {
      const line = this.lines[i];
      const shown = downsample(s.points, 2 * (x1 - x0));
      line.setAttribute("points", shown.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
      line.setAttribute("data-series", s.name);
      line.classList.toggle("cv-dashed", s.dashed);
    });
    this.yMax.textContent = fmt(yRange ? hi : ymax);
    this.yMin.textContent = fmt(yRange ? lo : ymin);
    this.xMin.textContent = fmt(xa);
    this.xMax.textContent = fmt(xb);
    if (!named) {
      const pts = series[0].points;
      const last = pts[pts.length - 1];
      this.last.textContent = `(step ${fmt(last[0])}: ${fmt(last[1])})`;
    } else this.last.textContent = "";
  }

  dispose() {}
}

// ---------------------------------------------------------------- progress

/** `{"kind": "progress"}`: a progress bar; the view moves its status and error lines in here. */
export class ProgressPanel {
  constructor(spec) {
    this.kind = "progress";
    this.fill = h("div", { class: "cv-progress-fill" });
    this.bar = h(
      "div",
      { class: "cv-progress", "data-cv": "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "0", "aria-valuenow": "0" },
      this.fill,
    );
    this.slot = h("div", { class: "cv-progress-text" });
    this.el = h("div", { class: "cv-panel cv-panel-progress", "data-cv-panel": "progress" }, spec.label ? h("div", { class: "cv-panel-title", text: spec.label }) : null, this.bar, this.slot);
  }

  /** done: completed steps, total: steps of the run. */
  set(done, total) {
    const frac = total > 0 ? Math.min(Math.max(done / total, 0), 1) : 0;
    this.fill.style.width = `${(frac * 100).toFixed(2)}%`;
    this.bar.setAttribute("aria-valuenow", String(Math.max(0, done)));
    this.bar.setAttribute("aria-valuemax", String(Math.max(0, total)));
    this.bar.setAttribute("data-value", frac.toFixed(4));
  }

  dispose() {}
}

/**
 * Build a panel from its spec; unknown kinds give a small placeholder (never throw).
 * ctx: {model, index (position in `panels`), onDownload(img, panel)}.
 */
export function createPanel(spec, ctx = {}) {
  const kind = spec && spec.kind;
  if (kind === "image") return new ImagePanel(spec, ctx);
  if (kind === "chart") return new ChartPanel(spec);
  if (kind === "progress") return new ProgressPanel(spec);
  if (kind === "table") return new TablePanel(spec, ctx);
  if (kind === "bars") return new BarsPanel(spec, ctx);
  if (kind === "text") return new TextPanel(spec, ctx);
  return {
    kind: "unknown",
    el: h("div", { class: "cv-panel cv-panel-unknown", text: `unsupported panel kind: ${String(kind)}` }),
    dispose() {},
  };
}
