// Panels of the method widgets (PROTOCOL.md, "Extensions for the method widgets"): image panels
// bound to bytes traits (+ grid hover, click messages), table, bars, text.
import { describe, it, expect, afterEach, vi } from "vitest";
import widget from "../src/index.js";
import { FakeModel, pngBytes, jpegBytes, fire, recordBlobs } from "./fake-model.js";
import { sortEntries, formatCell } from "../src/datapanels.js";
import { fraction } from "../src/panels.js";

function mount(state = {}) {
  const model = new FakeModel(state);
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el });
  const $ = (sel) => el.querySelector(sel);
  const $$ = (sel) => [...el.querySelectorAll(sel)];
  return { model, el, $, $$, cleanup };
}

async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
}

function rect(el, left, top, width, height) {
  el.getBoundingClientRect = () => ({ left, top, width, height, x: left, y: top, right: left + width, bottom: top + height });
}

function pointer(el, type, clientX, clientY) {
  el.dispatchEvent(new MouseEvent(type, { clientX, clientY, bubbles: true }));
}

const clicks = (model) => model.sent.filter((m) => m.type === "click");

afterEach(() => {
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

// ---------------------------------------------------------------- image panels

describe("image panels bound to a bytes trait", () => {
  const PANELS = [
    { kind: "image", trait: "original", label: "Original" },
    { kind: "image", trait: "heatmap", label: "Heatmap" },
    { kind: "image", label: "Live" },
  ];
  const boundImg = ($, trait) => $(`img[data-cv="image"][data-cv-trait="${trait}"]`);

  it("show their own trait, sniffing PNG vs JPEG from the magic bytes", async () => {
    const blobs = recordBlobs();
    const { $, $$ } = mount({ panels: PANELS, original: new DataView(pngBytes(1).buffer), heatmap: new DataView(jpegBytes(2).buffer) });
    expect($$('img[data-cv="image"]')).toHaveLength(3);
    const o = boundImg($, "original");
    const hm = boundImg($, "heatmap");
    expect(o.getAttribute("src")).toMatch(/^blob:/);
    expect(hm.getAttribute("src")).toMatch(/^blob:/);
    expect(o.getAttribute("src")).not.toBe(hm.getAttribute("src"));
    expect(o.getAttribute("data-mime")).toBe("image/png");
    expect(hm.getAttribute("data-mime")).toBe("image/jpeg");
    expect(blobs.map((b) => b.type).sort()).toEqual(["image/jpeg", "image/png"]);
    // the frame-fed panel has no picture and no data-cv-trait
    const live = $$('img[data-cv="image"]').find((i) => !i.hasAttribute("data-cv-trait"));
    expect(live.hidden).toBe(true);
    expect(live.getAttribute("src")).toBeNull();
  });

  it("follow trait changes (revoking the old URL), and an emptied trait hides the picture", async () => {
    const revoked = [];
    vi.spyOn(URL, "revokeObjectURL").mockImplementation((u) => revoked.push(u));
    const { model, $ } = mount({ panels: PANELS, original: new DataView(pngBytes(1).buffer) });
    const o = boundImg($, "original");
    const src1 = o.getAttribute("src");
    expect(o.hidden).toBe(false);
    model.py("original", new DataView(jpegBytes(5).buffer));
    const src2 = o.getAttribute("src");
    expect(src2).toMatch(/^blob:/);
    expect(src2).not.toBe(src1);
    expect(o.getAttribute("data-mime")).toBe("image/jpeg");
    expect(revoked).toContain(src1);
    // the same bytes again (e.g. the echo of a JS write): nothing reloads
    model.py("original", new DataView(jpegBytes(5).buffer));
    expect(o.getAttribute("src")).toBe(src2);
    model.py("original", new DataView(new ArrayBuffer(0)));
    expect(o.hidden).toBe(true);
    expect(o.getAttribute("src")).toBeNull();
    expect(revoked).toContain(src2);
  });

  it("frames and the image trait feed only the panel without `trait`", async () => {
    const { model, $, $$ } = mount({ panels: PANELS, run_id: 1, running: true, original: new DataView(pngBytes(1).buffer) });
    const o = boundImg($, "original");
    const hm = boundImg($, "heatmap");
    const src = o.getAttribute("src");
    model.emitCustom({ type: "frame", seq: 1, run_id: 1, step: 0, total: 2, losses: [[0, 1]], mime: "image/jpeg" }, [jpegBytes(9)]);
    await settle();
    const live = $$('img[data-cv="image"]').find((i) => !i.hasAttribute("data-cv-trait"));
    expect(live.getAttribute("src")).toMatch(/^blob:/);
    expect(o.getAttribute("src")).toBe(src);
    expect(hm.getAttribute("src")).toBeNull();
    expect(model.sent.filter((m) => m.type === "ack").map((m) => m.seq)).toEqual([1]);
    model.py("running", false);
    model.py("image", new DataView(pngBytes(4).buffer));
    await settle();
    expect(o.getAttribute("src")).toBe(src);
    expect(hm.getAttribute("src")).toBeNull();
  });

  it("a click sends the panel index, trait and position as fractions of the picture", () => {
    const panels = [{ kind: "chart", trait: "history" }, ...PANELS];
    const { model, $, $$ } = mount({ panels, original: new DataView(pngBytes(1).buffer), image: new DataView(pngBytes(2).buffer) });
    const o = boundImg($, "original");
    rect(o, 10, 20, 200, 100);
    pointer(o, "click", 60, 95);
    expect(clicks(model)).toEqual([{ type: "click", panel: 1, trait: "original", x: 0.25, y: 0.75 }]);
    // the far edge stays below 1, outside positions are clamped
    pointer(o, "click", 210, 500);
    const last = clicks(model)[1];
    expect(last.x).toBeLessThan(1);
    expect(Math.floor(last.x * 3)).toBe(2);
    expect(last.y).toBeLessThan(1);
    pointer(o, "click", -5, 20);
    expect(clicks(model)[2].x).toBe(0);
    expect(clicks(model)[2].y).toBe(0);
    // a panel with no picture (heatmap) sends nothing
    const hm = boundImg($, "heatmap");
    rect(hm, 0, 0, 100, 100);
    pointer(hm, "click", 50, 50);
    expect(clicks(model)).toHaveLength(3);
    // the frame-fed panel: trait ""
    return settle().then(() => {
      const live = $$('img[data-cv="image"]').find((i) => !i.hasAttribute("data-cv-trait"));
      expect(live.getAttribute("src")).toMatch(/^blob:/);
      rect(live, 0, 0, 256, 128);
      pointer(live, "click", 64, 32);
      expect(clicks(model)[3]).toEqual({ type: "click", panel: 3, trait: "", x: 0.25, y: 0.25 });
    });
  });

  it("fraction() clamps into [0, 1)", () => {
    expect(fraction(1)).toBeLessThan(1);
    expect(fraction(0.999)).toBe(0.999);
    expect(fraction(-2)).toBe(0);
    expect(fraction(NaN)).toBe(0);
  });

  it("grid: outlines the cell under the pointer and hides it when the pointer leaves", () => {
    const { $ } = mount({ panels: [{ kind: "image", trait: "original", grid: [3, 3] }], original: new DataView(pngBytes(1).buffer) });
    const o = boundImg($, "original");
    rect(o, 0, 0, 300, 150);
    const cell = $('[data-cv="grid-cell"]');
    expect(cell.hidden).toBe(true);
    pointer(o, "pointermove", 150, 140); // x 0.5 -> col 1, y 0.933 -> row 2
    expect(cell.hidden).toBe(false);
    expect(cell.getAttribute("data-row")).toBe("2");
    expect(cell.getAttribute("data-col")).toBe("1");
    expect(parseFloat(cell.style.left)).toBeCloseTo(33.3333, 3);
    expect(parseFloat(cell.style.top)).toBeCloseTo(66.6667, 3);
    expect(parseFloat(cell.style.width)).toBeCloseTo(33.3333, 3);
    expect(parseFloat(cell.style.height)).toBeCloseTo(33.3333, 3);
    pointer(o, "pointermove", 10, 10);
    expect(cell.getAttribute("data-row")).toBe("0");
    expect(cell.getAttribute("data-col")).toBe("0");
    fire(o.parentNode, "pointerleave");
    expect(cell.hidden).toBe(true);
  });

  it("grid: a click sends the cell (row, col) the outline shows", () => {
    const { $, model } = mount({ panels: [{ kind: "image", trait: "original", grid: [3, 4] }], original: new DataView(pngBytes(1).buffer) });
    const o = boundImg($, "original");
    rect(o, 0, 0, 400, 300);
    pointer(o, "click", 390, 150); // x 0.975 -> col 3, y 0.5 -> row 1
    const sent = clicks(model);
    expect(sent.length).toBe(1);
    expect([sent[0].row, sent[0].col]).toEqual([1, 3]);
    expect(sent[0].trait).toBe("original");
  });

  it("a panel without grid has no hover outline", () => {
    const { $ } = mount({ panels: [{ kind: "image", trait: "original" }], original: new DataView(pngBytes(1).buffer) });
    const o = boundImg($, "original");
    rect(o, 0, 0, 100, 100);
    pointer(o, "pointermove", 50, 50);
    expect($('[data-cv="grid-cell"]').hidden).toBe(true);
  });

  it("follows changes of `panels` (a new trait binding; the old trait's listener is removed)", () => {
    const { model, $ } = mount({ panels: [{ kind: "image", trait: "original" }], original: new DataView(pngBytes(1).buffer), other: new DataView(jpegBytes(1).buffer) });
    expect(model.listenerCount("change:original")).toBe(1);
    model.py("panels", [{ kind: "image", trait: "other" }]);
    expect(model.listenerCount("change:original")).toBe(0);
    expect(model.listenerCount("change:other")).toBe(1);
    expect(boundImg($, "original")).toBeNull();
    expect(boundImg($, "other").getAttribute("data-mime")).toBe("image/jpeg");
  });
});

// ---------------------------------------------------------------- table

const ROWS = [
  { unit: 0, concept: "dog", iou: 0.12345 },
  { unit: 1, concept: "Sky", iou: 0.5 },
  { unit: 2, concept: "car", iou: null },
  { unit: 10, concept: "grass", iou: 0.3 },
  { unit: 3, concept: "<b>bold</b>", iou: 0.05 },
];
const TABLE = {
  kind: "table",
  trait: "rows",
  label: "Units",
  columns: [
    { key: "unit", label: "Unit", numeric: true },
    { key: "concept", label: "Concept" },
    { key: "iou", label: "IoU", numeric: true, digits: 3 },
  ],
  sort: "iou",
  descending: true,
  select_trait: "unit",
  select_key: "unit",
  max_rows: 500,
  filter: true,
};

describe("table panel", () => {
  const keys = ($$) => $$('table[data-cv="table"] tbody tr').map((tr) => tr.getAttribute("data-cv-key"));
  const header = ($, key) => $(`th[data-cv-sort-key="${key}"]`);
  const click = (el) => el.dispatchEvent(new MouseEvent("click", { bubbles: true }));

  it("renders the rows sorted by the spec, numbers with `digits`, text literally", () => {
    const { $, $$ } = mount({ panels: [TABLE], rows: ROWS, unit: 1 });
    const table = $('table[data-cv="table"]');
    expect(table).not.toBeNull();
    expect([...table.querySelectorAll("thead th")].map((th) => th.textContent.replace(/[\u25b2\u25bc\s]/g, ""))).toEqual(["Unit", "Concept", "IoU"]);
    // descending IoU, empty (null) last
    expect(keys($$)).toEqual(["1", "10", "0", "3", "2"]);
    expect(header($, "iou").getAttribute("aria-sort")).toBe("descending");
    const first = $('tr[data-cv-key="0"]');
    expect([...first.children].map((td) => td.textContent)).toEqual(["0", "dog", "0.123"]);
    expect($('tr[data-cv-key="2"]').children[2].textContent).toBe("");
    const bold = $('tr[data-cv-key="3"]');
    expect(bold.children[1].textContent).toBe("<b>bold</b>");
    expect(bold.querySelector("b")).toBeNull();
    expect(table.getAttribute("data-rows")).toBe("5");
  });

  it("a header click sorts by that column ascending, a second click reverses", () => {
    const { $, $$ } = mount({ panels: [TABLE], rows: ROWS });
    click(header($, "unit").querySelector("button"));
    expect(keys($$)).toEqual(["0", "1", "2", "3", "10"]); // numeric, not "10" < "2"
    expect(header($, "unit").getAttribute("aria-sort")).toBe("ascending");
    expect(header($, "iou").hasAttribute("aria-sort")).toBe(false);
    click(header($, "unit"));
    expect(keys($$)).toEqual(["10", "3", "2", "1", "0"]);
    expect(header($, "unit").getAttribute("aria-sort")).toBe("descending");
    click(header($, "concept"));
    expect($$("tbody tr").map((tr) => tr.children[1].textContent)).toEqual(["<b>bold</b>", "car", "dog", "grass", "Sky"]);
    click(header($, "iou"));
    expect(keys($$)).toEqual(["3", "0", "10", "1", "2"]); // ascending, empty still last
    click(header($, "iou"));
    expect(keys($$)).toEqual(["1", "10", "0", "3", "2"]);
  });

  it("keeps the sort order when the rows trait changes", () => {
    const { model, $, $$ } = mount({ panels: [TABLE], rows: ROWS });
    click(header($, "unit"));
    model.py("rows", [...ROWS, { unit: 5, concept: "tree", iou: 0.9 }]);
    expect(keys($$)).toEqual(["0", "1", "2", "3", "5", "10"]);
    expect($('table[data-cv="table"]').getAttribute("data-total")).toBe("6");
  });

  it("the filter box keeps rows whose cells contain the text (any column, any case)", () => {
    const { $, $$ } = mount({ panels: [TABLE], rows: ROWS });
    const box = $('[data-cv="table-filter"]');
    box.value = "S";
    fire(box, "input");
    expect(keys($$).sort()).toEqual(["1", "10"]); // "Sky", "grass"
    box.value = "0.12";
    fire(box, "input");
    expect(keys($$)).toEqual(["0"]);
    box.value = "10";
    fire(box, "input");
    expect(keys($$)).toEqual(["10"]);
    expect($('[data-cv="table-count"]').textContent).toBe("1 of 5");
    box.value = "";
    fire(box, "input");
    expect(keys($$)).toHaveLength(5);
  });

  it("no filter box unless `filter` is true", () => {
    const { $ } = mount({ panels: [{ ...TABLE, filter: false }], rows: ROWS });
    expect($('[data-cv="table-filter"]')).toBeNull();
  });

  it("highlights the row of select_trait and follows the trait", () => {
    const { model, $, $$ } = mount({ panels: [TABLE], rows: ROWS, unit: 1 });
    const selected = () => $$("tbody tr.cv-selected").map((tr) => tr.getAttribute("data-cv-key"));
    expect(selected()).toEqual(["1"]);
    expect($('tr[data-cv-key="1"]').getAttribute("data-selected")).toBe("true");
    model.py("unit", 10);
    expect(selected()).toEqual(["10"]);
    model.py("unit", 99);
    expect(selected()).toEqual([]);
  });

  it("a row click sets select_trait to row[select_key] (raw value) and moves the highlight", () => {
    const { model, $, $$ } = mount({ panels: [TABLE], rows: ROWS, unit: 1 });
    click($('tr[data-cv-key="10"]').children[1]);
    expect(model.writesOf("unit")).toEqual([10]);
    expect(model.get("unit")).toBe(10);
    expect($$("tbody tr.cv-selected").map((tr) => tr.getAttribute("data-cv-key"))).toEqual(["10"]);
    // keyboard: Enter on a focused row
    $('tr[data-cv-key="3"]').dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(model.writesOf("unit")).toEqual([10, 3]);
  });

  it("select_key differs from select_trait", () => {
    const panels = [{ ...TABLE, select_trait: "concept_sel", select_key: "concept" }];
    const { model, $ } = mount({ panels, rows: ROWS, concept_sel: "dog" });
    expect($('tr[data-cv-key="dog"]').classList.contains("cv-selected")).toBe(true);
    click($('tr[data-cv-key="grass"]'));
    expect(model.writesOf("concept_sel")).toEqual(["grass"]);
  });

  it("rows are not clickable without select_trait", () => {
    const { select_trait, ...spec } = TABLE;
    void select_trait;
    const { model, $ } = mount({ panels: [spec], rows: ROWS, unit: 1 });
    click($('tr[data-cv-key="10"]'));
    expect(model.writes).toEqual([]);
    expect($("tbody tr.cv-selected")).toBeNull();
  });

  it("shows at most max_rows rows (after sort and filter)", () => {
    const rows = Array.from({ length: 30 }, (_, i) => ({ unit: i, concept: `c${i}`, iou: i / 100 }));
    const { $, $$ } = mount({ panels: [{ ...TABLE, max_rows: 10 }], rows });
    expect(keys($$)).toEqual(["29", "28", "27", "26", "25", "24", "23", "22", "21", "20"]);
    const table = $('table[data-cv="table"]');
    expect(table.getAttribute("data-rows")).toBe("10");
    expect(table.getAttribute("data-matches")).toBe("30");
    expect($('[data-cv="table-note"]').hidden).toBe(false);
    expect($('[data-cv="table-note"]').textContent).toContain("10 of 30");
  });

  it("without `columns`, columns come from the first row's keys", () => {
    const { $ } = mount({ panels: [{ kind: "table", trait: "rows" }], rows: [{ a: 1, b: "x" }] });
    expect([...$("thead tr").children].map((th) => th.getAttribute("data-cv-sort-key"))).toEqual(["a", "b"]);
    expect($('tr[data-cv-key="1"]')).not.toBeNull();
  });

  it("sortEntries / formatCell helpers", () => {
    const e = [{ row: { v: "b10" }, i: 0 }, { row: { v: "b9" }, i: 1 }, { row: { v: "" }, i: 2 }, { row: { v: "a" }, i: 3 }];
    expect(sortEntries(e, { key: "v" }, false).map((x) => x.i)).toEqual([3, 1, 0, 2]);
    expect(sortEntries(e, { key: "v" }, true).map((x) => x.i)).toEqual([0, 1, 3, 2]);
    expect(formatCell(0.5, { digits: 3 })).toBe("0.500");
    expect(formatCell(2, { numeric: true, digits: 1 })).toBe("2.0");
    expect(formatCell(null, {})).toBe("");
  });
});

// ---------------------------------------------------------------- bars

describe("bars panel", () => {
  const widths = ($$) => $$('[data-cv="bar"]').map((b) => parseFloat(b.style.width));

  it("draws bars with widths proportional to the values (scale: the largest value)", () => {
    const { $, $$ } = mount({
      panels: [{ kind: "bars", trait: "predictions", label: "Top-5", digits: 3 }],
      predictions: [
        ["golden retriever", 0.8],
        ["<i>tabby</i>", 0.2],
        ["tiger", 0.4],
      ],
    });
    expect($('[data-cv="bars"]')).not.toBeNull();
    expect(widths($$)).toEqual([100, 25, 50]);
    expect($$(".cv-bar-label").map((l) => l.textContent)).toEqual(["golden retriever", "<i>tabby</i>", "tiger"]);
    expect($("[data-cv-bar-row] i")).toBeNull();
    expect($$(".cv-bar-value").map((v) => v.textContent)).toEqual(["0.800", "0.200", "0.400"]);
    expect($('[data-cv="legend"]')).toBeNull(); // one series: no legend
  });

  it("`max` fixes the scale; values above are capped, negatives are empty", () => {
    const { $$ } = mount({
      panels: [{ kind: "bars", trait: "p", max: 1.0 }],
      p: [
        ["a", 0.5],
        ["b", 0.25],
        ["c", 2],
        ["d", -1],
      ],
    });
    expect(widths($$)).toEqual([50, 25, 100, 0]);
  });

  it("several series: one bar per series and row, and a legend", () => {
    const { $, $$ } = mount({
      panels: [{ kind: "bars", trait: "p", series: ["clean", "adversarial"], max: 1.0 }],
      p: [
        ["panda", 0.9, 0.1],
        ["gibbon", 0.05, 0.6],
      ],
    });
    const legend = $('[data-cv="legend"]');
    expect(legend).not.toBeNull();
    expect([...legend.children].map((c) => c.textContent)).toEqual(["clean", "adversarial"]);
    const bars = $$('[data-cv="bar"]');
    expect(bars).toHaveLength(4);
    expect(bars.map((b) => b.getAttribute("data-series"))).toEqual(["clean", "adversarial", "clean", "adversarial"]);
    expect(widths($$)).toEqual([90, 10, 5, 60]);
    expect(bars[1].classList.contains("cv-series-1")).toBe(true);
    expect(bars[0].classList.contains("cv-series-0")).toBe(true);
    // each series is drawn in its colour; the legend's swatches match the bars
    expect(bars.map((b) => b.style.getPropertyValue("background"))).toEqual(
      ["0", "1", "0", "1"].map((n) => `var(--cv-series-${n})`),
    );
    const swatches = [...legend.querySelectorAll(".cv-swatch")];
    expect(swatches.map((sw) => sw.style.getPropertyValue("background"))).toEqual(["var(--cv-series-0)", "var(--cv-series-1)"]);
  });

  it("follows the trait", () => {
    const { model, $$ } = mount({ panels: [{ kind: "bars", trait: "p" }], p: [["a", 1]] });
    model.py("p", [
      ["x", 3],
      ["y", 1.5],
    ]);
    expect(widths($$)).toEqual([100, 50]);
    expect($$(".cv-bar-label").map((l) => l.textContent)).toEqual(["x", "y"]);
    model.py("p", []);
    expect($$('[data-cv="bar"]')).toHaveLength(0);
  });
});

// ---------------------------------------------------------------- text

describe("text panel", () => {
  it("shows the trait as plain text, never HTML, and follows it", () => {
    const { model, $ } = mount({ panels: [{ kind: "text", trait: "details", label: "Details" }], details: "unit 7: <b>dog</b> & <img src=x onerror=alert(1)>\nsecond line" });
    const box = $('[data-cv="text"]');
    expect(box.tagName).toBe("PRE");
    expect(box.classList.contains("cv-textbox")).toBe(true);
    expect(box.textContent).toBe("unit 7: <b>dog</b> & <img src=x onerror=alert(1)>\nsecond line");
    expect(box.querySelector("b")).toBeNull();
    expect(box.querySelector("img")).toBeNull();
    expect(box.children).toHaveLength(0);
    model.py("details", "changed");
    expect(box.textContent).toBe("changed");
    model.py("details", null);
    expect(box.textContent).toBe("");
  });
});

// ---------------------------------------------------------------- cleanup

describe("cleanup of the new panels and controls", () => {
  it("removes every model and DOM listener and revokes bound picture URLs", () => {
    const revoked = [];
    vi.spyOn(URL, "revokeObjectURL").mockImplementation((u) => revoked.push(u));
    const { model, $, cleanup } = mount({
      panels: [
        { kind: "image", trait: "original", grid: [3, 3] },
        { kind: "image" },
        TABLE,
        { kind: "bars", trait: "p", series: ["a", "b"] },
        { kind: "text", trait: "details" },
      ],
      controls: [
        { trait: "upload", kind: "upload", label: "Your image", accept: "image/*", name_trait: "upload_name" },
        { kind: "button", label: "Train decoder", action: "train" },
      ],
      original: new DataView(pngBytes(1).buffer),
      rows: ROWS,
      unit: 1,
      p: [["x", 1, 2]],
      details: "hi",
    });
    const img = $('img[data-cv-trait="original"]');
    const src = img.getAttribute("src");
    const row = $('tr[data-cv-key="10"]');
    const btn = $('button[data-cv-action="train"]');
    const th = $('th[data-cv-sort-key="unit"]');
    const before = row.parentNode.firstElementChild.getAttribute("data-cv-key");
    expect(model.listenerCount("change:original")).toBe(1);
    expect(model.listenerCount("change:rows")).toBe(1);
    expect(model.listenerCount("change:upload_name")).toBe(1);
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(revoked).toContain(src);
    // DOM listeners are gone too: nothing is sent or written, nothing re-sorts
    const sent = model.sent.length;
    rect(img, 0, 0, 100, 100);
    pointer(img, "click", 10, 10);
    btn.click();
    row.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    th.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    expect(model.sent.length).toBe(sent);
    expect(model.writes).toEqual([]);
    expect(row.parentNode.firstElementChild.getAttribute("data-cv-key")).toBe(before);
  });
});

describe("image panel width", () => {
  it("sets the picture box width from spec.width and ignores bad values", async () => {
    const { ImagePanel } = await import("../src/panels.js");
    const ok = new ImagePanel({ kind: "image", width: 512 }, { index: 0 });
    expect(ok.el.querySelector(".cv-img-box").style.width).toBe("512px");
    const bad = new ImagePanel({ kind: "image", width: "huge" }, { index: 1 });
    expect(bad.el.querySelector(".cv-img-box").style.width).toBe("");
  });
});

// ---------------------------------------------------------------- multi-series charts

describe("charts of several named series", () => {
  const PANELS = [{ kind: "chart", trait: "curves", label: "Deletion", y_range: [0, 1] }];

  it("draws one line per series, with a legend, and follows the trait", () => {
    const value = {
      series: [
        { name: "gradient", points: [[0, 0.9], [0.5, 0.4], [1, 0.1]] },
        { name: "random", points: [[0, 0.9], [1, 0.6]], dashed: true },
      ],
    };
    const { model, $, $$ } = mount({ panels: PANELS, curves: value });
    const chart = $('[data-cv="chart"]');
    expect(chart.getAttribute("data-series")).toBe("2");
    expect(chart.getAttribute("data-points")).toBe("5");
    const lines = $$('[data-cv="chart-line"]');
    expect(lines.map((l) => l.getAttribute("data-series"))).toEqual(["gradient", "random"]);
    expect(lines[1].classList.contains("cv-dashed")).toBe(true);
    expect(lines[0].getAttribute("points").split(" ")).toHaveLength(3);
    expect($$(".cv-chart-key").map((k) => k.textContent)).toEqual(["gradient", "random"]);
    // the fixed range: 1.0 at the top even though no point reaches it
    expect(chart.querySelector("text").textContent).toBe("1");
    model.py("curves", { series: [{ name: "gradient", points: [[0, 1]] }] });
    expect($$('[data-cv="chart-line"]')).toHaveLength(1);
    expect(chart.getAttribute("data-series")).toBe("1");
    model.py("curves", { series: "bad" });
    expect(chart.getAttribute("data-points")).toBe("0");
  });

  it("drops bad points and items instead of throwing", () => {
    const value = { series: [null, { name: "a", points: [[0, 1], [1, null], ["x", 2], [2, NaN], [3, 0]] }] };
    const { $ } = mount({ panels: PANELS, curves: value });
    expect($('[data-cv="chart"]').getAttribute("data-points")).toBe("2");
  });
});
