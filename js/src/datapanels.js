// Panels bound to a data trait (see js/PROTOCOL.md, "Extensions for the method widgets"):
// table (list of dicts), bars (list of [label, v1, v2, ...]) and text. Each one follows its trait
// itself (change:<trait>) and is rebuilt by the view when `panels` changes. Every string from
// Python (labels, class names, concepts, file names) is set with textContent, never parsed.

import { h, on, listen, Disposer, fmt } from "./dom.js";

/** Default `max_rows` of a table. */
export const TABLE_MAX_ROWS = 500;

function caption(text) {
  return text !== undefined && text !== null && text !== "" ? h("figcaption", { class: "cv-panel-title", text: String(text) }) : null;
}

function nonNegInt(v) {
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

/** A number with `digits` decimals when digits is given, else fmt(). */
export function formatNumber(v, digits) {
  const d = nonNegInt(digits);
  if (typeof v === "number" && Number.isFinite(v) && d !== null) return v.toFixed(Math.min(d, 20));
  return fmt(v);
}

/** Text of one table cell. */
export function formatCell(v, col = {}) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return formatNumber(v, col.digits);
  if (col.numeric && typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return formatNumber(Number(v), col.digits);
  if (Array.isArray(v)) return v.map((x) => formatCell(x, col)).join(", ");
  if (typeof v === "object") {
    try {
      return JSON.stringify(v);
    } catch {
      return String(v);
    }
  }
  return String(v);
}

function sameKey(a, b) {
  return a !== null && a !== undefined && b !== null && b !== undefined && (a === b || String(a) === String(b));
}

const collator = typeof Intl !== "undefined" ? new Intl.Collator(undefined, { numeric: true, sensitivity: "base" }) : null;

function numericOf(v) {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "string" && v.trim() !== "") {
    const n = Number(v);
    return Number.isFinite(n) ? n : null;
  }
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}

/**
 * Sort [{row, i}] entries by column `col` (stable; ties keep the trait's order). Numbers compare
 * as numbers (numeric columns, or both values numbers), the rest as text (natural order).
 * Empty values (null, "", NaN, non-numbers in a numeric column) always go last.
 */
export function sortEntries(entries, col, descending) {
  const key = col.key;
  const val = (e) => {
    const v = e.row[key];
    if (v === null || v === undefined || v === "") return { empty: true };
    if (col.numeric || typeof v === "number") {
      const n = numericOf(v);
      if (n === null) return col.numeric ? { empty: true } : { s: String(v) };
      return { n };
    }
    return { s: formatCell(v, col) };
  };
  const keyed = entries.map((e) => ({ e, v: val(e) }));
  keyed.sort((a, b) => {
    if (a.v.empty || b.v.empty) return a.v.empty && b.v.empty ? a.e.i - b.e.i : a.v.empty ? 1 : -1;
    let c;
    if (a.v.n !== undefined && b.v.n !== undefined) c = a.v.n - b.v.n;
    else if (a.v.n !== undefined) c = -1; // numbers before text
    else if (b.v.n !== undefined) c = 1;
    else c = collator ? collator.compare(a.v.s, b.v.s) : a.v.s < b.v.s ? -1 : a.v.s > b.v.s ? 1 : 0;
    if (c === 0) return a.e.i - b.e.i;
    return descending ? -c : c;
  });
  return keyed.map((k) => k.e);
}

/** Columns of a table spec: [{key, label, numeric, digits}]; derived from the first row when the
 * spec has none. */
export function tableColumns(spec, rows) {
  if (Array.isArray(spec.columns) && spec.columns.length) {
    return spec.columns
      .filter((c) => c && (typeof c === "string" || (typeof c === "object" && c.key !== undefined)))
      .map((c) => (typeof c === "string" ? { key: c, label: c } : { ...c, key: String(c.key), label: String(c.label ?? c.key) }));
  }
  const first = rows.find((r) => r && typeof r === "object");
  if (!first) return [];
  return Object.keys(first).map((k) => ({ key: k, label: k, numeric: typeof first[k] === "number" }));
}

// ---------------------------------------------------------------- table

/** What the data panels share: kind, model, spec, the trait they follow and a Disposer. */
class DataPanel {
  constructor(kind, spec, model) {
    this.kind = kind;
    this.model = model;
    this.spec = spec;
    this.trait = typeof spec.trait === "string" ? spec.trait : "";
    this.d = new Disposer();
  }

  /** Render now and again on every change of the trait. */
  follow() {
    if (this.model && this.trait) this.d.add(listen(this.model, `change:${this.trait}`, () => this.render()));
    this.render();
  }

  dispose() {
    this.d.dispose();
  }
}

/**
 * `{"kind": "table", "trait", "label", "columns", "sort", "descending", "select_trait",
 * "select_key", "max_rows", "filter"}`. Element table[data-cv="table"]; rows tr[data-cv-key].
 */
export class TablePanel extends DataPanel {
  constructor(spec, { model } = {}) {
    super("table", spec, model);
    this.selectTrait = typeof spec.select_trait === "string" && spec.select_trait ? spec.select_trait : "";
    this.sortKey = spec.sort !== undefined && spec.sort !== null && spec.sort !== "" ? String(spec.sort) : null;
    this.descending = Boolean(spec.descending);
    const mr = Number(spec.max_rows);
    this.maxRows = Number.isFinite(mr) && mr >= 1 ? Math.floor(mr) : TABLE_MAX_ROWS;
    this.query = "";
    this.rows = [];
    this.columns = [];
    this.columnsKey = null;
    this.rowOf = new WeakMap(); // <tr> -> row object

    this.head = h("thead");
    this.body = h("tbody");
    this.table = h(
      "table",
      { class: "cv-table", "data-cv": "table", "data-trait": this.trait, "data-rows": "0", "data-total": "0" },
      this.head,
      this.body,
    );
    if (this.selectTrait) this.table.classList.add("cv-table-selectable");
    this.note = h("div", { class: "cv-table-note", "data-cv": "table-note" });
    this.note.hidden = true;
    this.count = h("span", { class: "cv-count", "data-cv": "table-count" });
    this.filter = null;
    let filterRow = null;
    if (spec.filter) {
      this.filter = h("input", {
        type: "search",
        class: "cv-filter",
        placeholder: "Filter\u2026",
        autocomplete: "off",
        spellcheck: "false",
        "data-cv": "table-filter",
        "aria-label": `Filter ${spec.label || this.trait}`,
      });
      filterRow = h("div", { class: "cv-search-row" }, this.filter, this.count);
      this.d.add(
        on(this.filter, "input", () => {
          this.query = this.filter.value;
          this.renderBody();
        }),
      );
    }
    this.el = h(
      "figure",
      { class: "cv-panel cv-panel-table", "data-cv-panel": "table", "data-cv-trait": this.trait },
      caption(spec.label),
      filterRow,
      h("div", { class: "cv-table-box" }, this.table),
      this.note,
    );

    this.d.add(on(this.head, "click", (e) => this.onHeaderClick(e)));
    this.d.add(on(this.body, "click", (e) => this.onRowEvent(e)));
    this.d.add(
      on(this.body, "keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") this.onRowEvent(e);
      }),
    );
    if (model && this.selectTrait && this.selectTrait !== this.trait) {
      this.d.add(listen(model, `change:${this.selectTrait}`, () => this.renderSelection()));
    }
    this.follow();
  }

  /** Which row field is the row's key (data-cv-key, the value written to select_trait). */
  keyField() {
    if (this.spec.select_key !== undefined && this.spec.select_key !== null && this.spec.select_key !== "") return String(this.spec.select_key);
    if (this.selectTrait && this.columns.some((c) => c.key === this.selectTrait)) return this.selectTrait;
    if (this.selectTrait && this.rows.some((r) => this.selectTrait in r)) return this.selectTrait;
    return this.columns.length ? this.columns[0].key : null;
  }

  render() {
    const value = this.model ? this.model.get(this.trait) : [];
    this.rows = (Array.isArray(value) ? value : []).filter((r) => r && typeof r === "object" && !Array.isArray(r));
    const cols = tableColumns(this.spec, this.rows);
    const key = JSON.stringify(cols.map((c) => [c.key, c.label, Boolean(c.numeric)]));
    if (key !== this.columnsKey) {
      this.columns = cols;
      this.columnsKey = key;
      this.renderHead();
    }
    this.renderBody();
  }

  renderHead() {
    const tr = h("tr");
    for (const c of this.columns) {
      tr.append(
        h(
          "th",
          { scope: "col", class: c.numeric ? "cv-num" : null, "data-cv-sort-key": c.key },
          h("button", { type: "button", class: "cv-th-btn", title: `Sort by ${c.label}` }, c.label, h("span", { class: "cv-sort-ind", "aria-hidden": "true" })),
        ),
      );
    }
    this.head.replaceChildren(tr);
    this.renderSortState();
  }

  renderSortState() {
    this.table.setAttribute("data-sort", this.sortKey ?? "");
    this.table.setAttribute("data-descending", this.descending ? "true" : "false");
    for (const th of this.head.querySelectorAll("th")) {
      const sorted = this.sortKey !== null && th.getAttribute("data-cv-sort-key") === this.sortKey;
      if (sorted) th.setAttribute("aria-sort", this.descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
      th.classList.toggle("cv-sorted", sorted);
      const ind = th.querySelector(".cv-sort-ind");
      if (ind) ind.textContent = sorted ? (this.descending ? " \u25bc" : " \u25b2") : "";
    }
  }

  /** Rows after the filter and the sort, before max_rows. */
  visibleEntries() {
    let entries = this.rows.map((row, i) => ({ row, i }));
    const q = String(this.query || "").trim().toLowerCase();
    if (q) {
      entries = entries.filter((e) => this.columns.some((c) => formatCell(e.row[c.key], c).toLowerCase().includes(q)));
    }
    const col = this.sortKey !== null ? this.columns.find((c) => c.key === this.sortKey) || { key: this.sortKey } : null;
    if (col) entries = sortEntries(entries, col, this.descending);
    return entries;
  }

  renderBody() {
    const entries = this.visibleEntries();
    const shown = entries.slice(0, this.maxRows);
    const keyField = this.keyField();
    const trs = shown.map(({ row }) => {
      const k = keyField !== null ? row[keyField] : undefined;
      const tr = h(
        "tr",
        { "data-cv-key": k === undefined || k === null ? "" : String(k), tabindex: this.selectTrait ? "0" : null },
        this.columns.map((c) => {
          const text = formatCell(row[c.key], c);
          // long cells are shortened with an ellipsis: the title shows them whole on hover
          return h("td", { class: c.numeric ? "cv-num" : null, title: text.length > 24 ? text : null, text });
        }),
      );
      this.rowOf.set(tr, row);
      return tr;
    });
    this.body.replaceChildren(...trs);
    this.table.setAttribute("data-rows", String(shown.length));
    this.table.setAttribute("data-matches", String(entries.length));
    this.table.setAttribute("data-total", String(this.rows.length));
    this.count.textContent = `${entries.length} of ${this.rows.length}`;
    this.note.hidden = entries.length <= shown.length;
    this.note.textContent = this.note.hidden ? "" : `showing the first ${shown.length} of ${entries.length} rows`;
    this.renderSelection();
  }

  renderSelection() {
    const current = this.selectTrait && this.model ? this.model.get(this.selectTrait) : undefined;
    const keyField = this.keyField();
    for (const tr of this.body.children) {
      const row = this.rowOf.get(tr);
      const sel = Boolean(this.selectTrait) && row !== undefined && keyField !== null && sameKey(row[keyField], current);
      tr.classList.toggle("cv-selected", sel);
      if (sel) tr.setAttribute("data-selected", "true");
      else tr.removeAttribute("data-selected");
    }
  }

  onHeaderClick(e) {
    const th = e.target && e.target.closest ? e.target.closest("th[data-cv-sort-key]") : null;
    if (!th || !this.head.contains(th)) return;
    const key = th.getAttribute("data-cv-sort-key");
    if (key === this.sortKey) this.descending = !this.descending;
    else {
      this.sortKey = key;
      this.descending = false;
    }
    this.renderSortState();
    this.renderBody();
  }

  onRowEvent(e) {
    if (!this.selectTrait || !this.model) return;
    const tr = e.target && e.target.closest ? e.target.closest("tr") : null;
    const row = tr ? this.rowOf.get(tr) : undefined;
    const keyField = this.keyField();
    if (!row || keyField === null || !(keyField in row)) return;
    if (e.type === "keydown") e.preventDefault();
    const v = row[keyField];
    if (!(v === this.model.get(this.selectTrait))) {
      this.model.set(this.selectTrait, v);
      this.model.save_changes();
    }
    this.renderSelection();
  }
}

// ---------------------------------------------------------------- bars

/** Series `i` in its colour: six colours (--cv-series-0..5 in style.css), then round again;
 * the class cv-series-<n> names the colour. */
function paintSeries(el, i) {
  const n = i % 6;
  el.classList.add(`cv-series-${n}`);
  el.style.setProperty("background", `var(--cv-series-${n})`);
  return el;
}

/** Bars of a `bars` trait: rows [label, v1, v2, ...] -> {label, values[nSeries]}. */
export function barRows(value, nSeries) {
  if (!Array.isArray(value)) return [];
  const out = [];
  for (const r of value) {
    if (!Array.isArray(r) || !r.length) continue;
    const values = [];
    for (let s = 0; s < nSeries; s++) {
      const v = r[s + 1];
      values.push(typeof v === "number" ? v : v === null || v === undefined || v === "" ? NaN : Number(v));
    }
    out.push({ label: r[0] === null || r[0] === undefined ? "" : String(r[0]), values });
  }
  return out;
}

/**
 * `{"kind": "bars", "trait", "label", "series": [...], "max", "digits"}`: horizontal bars, one per
 * row and series, width proportional to value / max (default max: the largest value). Element
 * [data-cv="bars"]; each bar .cv-bar-fill[data-cv="bar"] carries data-series / data-value.
 */
export class BarsPanel extends DataPanel {
  constructor(spec, { model } = {}) {
    super("bars", spec, model);
    this.series = Array.isArray(spec.series) && spec.series.length ? spec.series.map((s) => String(s)) : [""];
    this.bars = h("div", { class: "cv-bars", "data-cv": "bars", "data-trait": this.trait, "data-rows": "0" });
    this.legend = null;
    if (this.series.length > 1) {
      this.legend = h(
        "div",
        { class: "cv-legend", "data-cv": "legend" },
        this.series.map((name, i) =>
          h("span", { class: "cv-legend-item", "data-series": name }, paintSeries(h("span", { class: "cv-swatch" }), i), name),
        ),
      );
    }
    this.el = h("figure", { class: "cv-panel cv-panel-bars", "data-cv-panel": "bars", "data-cv-trait": this.trait }, caption(spec.label), this.legend, this.bars);
    this.follow();
  }

  scaleMax(rows) {
    const fixed = Number(this.spec.max);
    if (this.spec.max !== undefined && this.spec.max !== null && Number.isFinite(fixed) && fixed > 0) return fixed;
    let m = 0;
    for (const r of rows) for (const v of r.values) if (Number.isFinite(v) && v > m) m = v;
    return m;
  }

  render() {
    const rows = barRows(this.model ? this.model.get(this.trait) : [], this.series.length);
    const max = this.scaleMax(rows);
    const multi = this.series.length > 1;
    this.bars.setAttribute("data-rows", String(rows.length));
    this.bars.setAttribute("data-max", String(max));
    this.bars.replaceChildren(
      ...rows.map((r) =>
        h(
          "div",
          { class: "cv-bar-row", "data-cv-bar-row": "", "data-label": r.label },
          h("div", { class: "cv-bar-label", title: r.label, text: r.label }),
          h(
            "div",
            { class: "cv-bar-set" },
            r.values.map((v, s) => {
              const frac = max > 0 && Number.isFinite(v) ? Math.min(Math.max(v / max, 0), 1) : 0;
              const fill = paintSeries(
                h("div", {
                  class: "cv-bar-fill",
                  "data-cv": "bar",
                  "data-series": this.series[s],
                  "data-value": Number.isFinite(v) ? String(v) : "",
                }),
                s,
              );
              fill.style.width = `${(frac * 100).toFixed(2)}%`;
              return h(
                "div",
                { class: "cv-bar-line", title: multi ? `${this.series[s]}: ${formatNumber(v, this.spec.digits)}` : null },
                h("div", { class: "cv-bar-track" }, fill),
                h("span", { class: "cv-bar-value", text: Number.isFinite(v) ? formatNumber(v, this.spec.digits) : "" }),
              );
            }),
          ),
        ),
      ),
    );
  }
}

// ---------------------------------------------------------------- text

/** Text of a `text` trait: strings as is, a list of strings one per line, other values as JSON. */
export function textOf(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v.join("\n");
  if (typeof v === "object") {
    try {
      return JSON.stringify(v, null, 2);
    } catch {
      return String(v);
    }
  }
  return String(v);
}

/** `{"kind": "text", "trait", "label"}`: plain, pre-wrapped text (textContent, never HTML). */
export class TextPanel extends DataPanel {
  constructor(spec, { model } = {}) {
    super("text", spec, model);
    this.box = h("pre", { class: "cv-textbox", "data-cv": "text", "data-trait": this.trait });
    this.el = h("figure", { class: "cv-panel cv-panel-text", "data-cv-panel": "text", "data-cv-trait": this.trait }, caption(spec.label), this.box);
    this.follow();
  }

  render() {
    this.box.textContent = textOf(this.model ? this.model.get(this.trait) : "");
    this.box.classList.toggle("cv-empty-text", !this.box.textContent);
  }
}
