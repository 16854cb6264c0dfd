// The front end a teacher meets (issue 13): keys stay inside the widget, Enter applies typed
// values, "waiting for the kernel", refused values, the search control, goodbye and download
// messages, `fraction255`, collapsed groups, labels shown whole, and what other hosts deliver.
import { describe, it, expect, afterEach, vi } from "vitest";
import widget from "../src/index.js";
import { ControlsView, formatValue, parseNumber, THROTTLE_MS } from "../src/controls.js";
import { toBytes, firstBuffer } from "../src/codecs.js";
import { FakeModel, fire, dragTo, release, jpegBytes, pngBytes, recordBlobs } from "./fake-model.js";

const PANELS = [{ kind: "image", label: "Image" }, { kind: "progress" }];

function mount(state = {}) {
  const model = new FakeModel({ panels: PANELS, ...state });
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el });
  const root = el.querySelector('[data-cv="root"]');
  const $ = (name) => el.querySelector(`[data-cv="${name}"]`);
  const q = (trait) => el.querySelector(`[data-cv-control="${trait}"]`);
  return { model, el, root, $, q, cleanup };
}

function controls(state) {
  const model = new FakeModel(state);
  const view = new ControlsView(model);
  document.body.appendChild(view.el);
  const q = (trait) => view.el.querySelector(`[data-cv-control="${trait}"]`);
  return { model, view, q };
}

function key(el, k, mods = {}) {
  const e = new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true, ...mods });
  el.dispatchEvent(e);
  return e;
}

async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

describe("keys stay inside the widget", () => {
  it("arrow keys, Enter and letters typed in a control do not reach the host's shortcuts; Escape does", () => {
    const { q, root } = mount({ controls: [{ trait: "unit", kind: "slider", min: 0, max: 9 }, { trait: "seed", kind: "int" }], unit: 3, seed: 0 });
    const seen = [];
    const host = (e) => seen.push(e.key);
    document.addEventListener("keydown", host); // JupyterLab listens here (bubbling)
    try {
      for (const k of ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "a", "Enter"]) key(q("unit"), k);
      key(q("seed"), "ArrowDown");
      expect(seen).toEqual([]);
      key(q("unit"), "Escape");
      expect(seen).toEqual(["Escape"]);
    } finally {
      document.removeEventListener("keydown", host);
    }
    // and the keys are not cancelled: the control's own default (moving the slider) still runs
    expect(key(q("unit"), "ArrowUp").defaultPrevented).toBe(false);
    expect(root.getAttribute("data-cv")).toBe("root");
  });

  it("Ctrl/Cmd shortcuts (save) reach the host, except text editing in a text box", () => {
    const { q } = mount({ controls: [{ trait: "unit", kind: "slider", min: 0, max: 9 }, { trait: "seed", kind: "int" }], unit: 3, seed: 0 });
    const seen = [];
    const host = (e) => seen.push(`${e.ctrlKey ? "C-" : e.metaKey ? "M-" : ""}${e.key}`);
    document.addEventListener("keydown", host);
    try {
      key(q("unit"), "s", { ctrlKey: true });
      key(q("seed"), "s", { metaKey: true });
      key(q("seed"), "c", { ctrlKey: true }); // copy in the number box: stays
      key(q("seed"), "V", { ctrlKey: true, shiftKey: true });
      key(q("seed"), "ArrowLeft", { ctrlKey: true });
      key(q("unit"), "d"); // "D D" would delete the cell in command mode
      expect(seen).toEqual(["C-s", "M-s"]);
    } finally {
      document.removeEventListener("keydown", host);
    }
  });

  it("Enter applies a typed value in number and text inputs (not only blur)", () => {
    const { model, q } = controls({ controls: [{ trait: "seed", kind: "int", min: 0 }, { trait: "lr", kind: "float" }, { trait: "name", kind: "text" }], seed: 1, lr: 0.05, name: "a" });
    q("seed").value = "42";
    key(q("seed"), "Enter");
    expect(model.writesOf("seed")).toEqual([42]);
    q("lr").value = "0.5";
    key(q("lr"), "Enter");
    expect(model.writesOf("lr")).toEqual([0.5]);
    q("name").value = "hello";
    key(q("name"), "Enter");
    expect(model.writesOf("name")).toEqual(["hello"]);
    // the browser's own change event after Enter does not write a second time
    fire(q("seed"), "change");
    expect(model.writesOf("seed")).toEqual([42]);
  });
});

describe("refused values: the control shows the kernel's value again", () => {
  it("a number input with focus follows the value the kernel sends back", () => {
    const { model, q } = controls({ controls: [{ trait: "seed", kind: "int" }], seed: 3 });
    const input = q("seed");
    input.focus();
    input.value = "-5";
    key(input, "Enter");
    expect(model.writesOf("seed")).toEqual([-5]);
    model.py("seed", 3); // the kernel refused -5 and re-sent its value (send_state)
    expect(document.activeElement).toBe(input);
    expect(input.value).toBe("3");
  });

  it("a slider being dragged follows a value the kernel sends that it never wrote", () => {
    const { model, q } = controls({ controls: [{ trait: "unit", kind: "slider", min: 0, max: 200, step: 1 }], unit: 5 });
    const input = q("unit");
    fire(input, "pointerdown");
    dragTo(input, 111);
    expect(model.writesOf("unit")).toEqual([111]);
    model.py("unit", 5); // refused: the kernel's value comes back while the pointer is down
    expect(input.value).toBe("5");
    expect(input.getAttribute("data-value")).toBe("5");
    release(input);
    expect(model.get("unit")).toBe(5);
    expect(model.writesOf("unit")).toEqual([111]);
  });

  it("a typed fraction255 readout with focus follows the kernel's value", () => {
    const { model, view } = controls({ controls: [{ trait: "epsilon", kind: "slider", min: 0, max: 0.1, format: "fraction255" }], epsilon: 4 / 255 });
    const box = view.el.querySelector('[data-cv-readout="epsilon"]');
    box.focus();
    box.value = "90/255";
    fire(box, "input");
    key(box, "Enter");
    expect(model.writesOf("epsilon")).toEqual([0.1]); // clamped to max in the browser
    model.py("epsilon", 4 / 255);
    expect(box.value).toBe("4/255");
  });
});

describe("waiting for the kernel", () => {
  it("says so from ready until the kernel's first trait change or message", () => {
    const { model, root, $, el } = mount({ auto_run: true });
    expect(model.sent.map((m) => m.type)).toContain("ready");
    expect(root.getAttribute("data-waiting")).toBe("true");
    expect($("waiting").hidden).toBe(false);
    expect($("waiting").textContent).toMatch(/waiting for the kernel/);
    expect(el.querySelector(".cv-empty").textContent).toMatch(/waiting for the kernel/);
    model.py("running", true);
    expect(root.getAttribute("data-waiting")).toBe("false");
    expect($("waiting").hidden).toBe(true);
    expect(el.querySelector(".cv-empty").textContent).toBe("no image yet");
  });

  it("a later view of a widget that already ran does not wait", () => {
    expect(mount({ auto_run: true, run_id: 2 }).root.getAttribute("data-waiting")).toBe("false");
    expect(mount({ auto_run: true, image: pngBytes(1) }).root.getAttribute("data-waiting")).toBe("false");
  });

  it("a custom message also ends the wait", () => {
    const { model, root } = mount({ auto_run: true });
    model.emitCustom({ type: "frame", seq: 1, run_id: 1, step: 0, total: 4, losses: [[0, 1]], mime: "image/jpeg" }, [jpegBytes(1)]);
    expect(root.getAttribute("data-waiting")).toBe("false");
  });

  it("a widget that does not run by itself does not wait; Run does until the kernel answers", () => {
    const { model, root, $ } = mount({ auto_run: false });
    expect(root.getAttribute("data-waiting")).toBe("false");
    $("run").click();
    expect(model.sent.at(-1)).toEqual({ type: "run" });
    expect(root.getAttribute("data-waiting")).toBe("true");
    model.py("status", "step 1/10");
    expect(root.getAttribute("data-waiting")).toBe("false");
  });
});

describe("search control", () => {
  const classes = [
    ["207: golden retriever", 207],
    ["208: Labrador retriever", 208],
    ["281: tabby cat", 281],
  ];

  it("filtering the list to exactly one match selects it", () => {
    const { model, view } = controls({ controls: [{ trait: "target", kind: "search", options: classes }], target: 207 });
    const filter = view.el.querySelector('[data-cv-search="target"]');
    filter.value = "retriever";
    fire(filter, "input");
    expect(model.writesOf("target")).toEqual([]); // two matches: nothing chosen yet
    filter.value = "tabby";
    fire(filter, "input");
    expect(model.writesOf("target")).toEqual([281]);
    expect(view.el.querySelector('[data-cv-current="target"]').textContent).toBe("281: tabby cat");
    filter.value = "";
    fire(filter, "input");
    expect(model.writesOf("target")).toEqual([281]);
  });
});

describe("goodbye and download messages", () => {
  it("removing a view sends goodbye once", () => {
    const { model, cleanup } = mount();
    cleanup();
    cleanup();
    expect(model.sent.filter((m) => m.type === "goodbye")).toHaveLength(1);
  });

  it("a download message saves its buffer through <a download> on a blob URL", async () => {
    const { model, root } = mount();
    const clicks = [];
    const spy = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function () {
      clicks.push({ name: this.getAttribute("download"), href: this.getAttribute("href") });
    });
    const created = recordBlobs();
    const bytes = new TextEncoder().encode('{"a": 1}');
    model.emitCustom({ type: "download", name: "run.json", mime: "application/json" }, [bytes]);
    expect(spy).toHaveBeenCalledTimes(1);
    expect(clicks[0].name).toBe("run.json");
    expect(clicks[0].href).toMatch(/^blob:/);
    expect(created[0].type).toBe("application/json");
    expect(new TextDecoder().decode(await created[0].arrayBuffer())).toBe('{"a": 1}');
    expect(root.getAttribute("data-downloads")).toBe("1");
    expect(document.querySelector('[data-cv="download-link"]')).toBeNull(); // removed after use
  });

  it("a download without bytes (a host that drops buffers) says so in the widget", () => {
    const { model, $ } = mount();
    const spy = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(() => {});
    vi.spyOn(console, "warn").mockImplementation(() => {});
    model.emit("msg:custom", { type: "download", name: "report.html", mime: "text/html" }, undefined);
    expect(spy).not.toHaveBeenCalled();
    expect($("notice").hidden).toBe(false);
    expect($("notice").textContent).toMatch(/report\.html.*did not deliver/);
  });

  it("frames without buffers are counted, and the widget says the picture is not live", async () => {
    const { model, root, $ } = mount();
    vi.spyOn(console, "warn").mockImplementation(() => {});
    model.emit("msg:custom", { type: "frame", seq: 1, run_id: 1, step: 0, total: 4, losses: [[0, 1]], mime: "image/jpeg" }, []);
    await settle();
    expect(model.sent.filter((m) => m.type === "ack").map((m) => m.seq)).toEqual([1]);
    expect($("notice").textContent).toMatch(/binary messages/);
    expect(root.getAttribute("data-step")).toBe("0");
  });
});

describe("what other hosts deliver (codecs)", () => {
  const PNG = [...pngBytes(7)];
  const b64 = btoa(String.fromCharCode(...PNG));

  it("toBytes reads DataView, ArrayBuffer, Uint8Array, base64, data URLs and JSON-ed typed arrays", () => {
    const u8 = Uint8Array.from(PNG);
    expect([...toBytes(new DataView(u8.buffer))]).toEqual(PNG);
    expect([...toBytes(u8.buffer)]).toEqual(PNG);
    expect([...toBytes(u8)]).toEqual(PNG);
    expect([...toBytes(b64)]).toEqual(PNG);
    expect([...toBytes(`data:image/png;base64,${b64}`)]).toEqual(PNG);
    expect([...toBytes(JSON.parse(JSON.stringify(u8)))]).toEqual(PNG); // {"0": 137, ...}
    expect(toBytes({ a: 1 }).length).toBe(0);
    expect(toBytes({ 0: 999 }).length).toBe(0);
  });

  it("firstBuffer finds the buffer in any of the forms, or null when there is none", () => {
    const u8 = Uint8Array.from(PNG);
    for (const buffers of [[new DataView(u8.buffer)], [u8.buffer], [u8], [b64], u8, new DataView(u8.buffer), { 0: u8 }]) {
      expect([...firstBuffer(buffers, {})]).toEqual(PNG);
    }
    expect([...firstBuffer(undefined, { buffers: [b64] })]).toEqual(PNG);
    for (const buffers of [undefined, null, [], [new Uint8Array(0)], [null]]) expect(firstBuffer(buffers, {})).toBeNull();
  });

  it("a frame whose buffer arrives as base64 is drawn", async () => {
    const { model, root } = mount();
    const jb = [...jpegBytes(3)];
    model.emit("msg:custom", { type: "frame", seq: 1, run_id: 1, step: 2, total: 4, losses: [[2, 1]], mime: "image/jpeg" }, [btoa(String.fromCharCode(...jb))]);
    await settle();
    // happy-dom does not decode pictures: the frame is acked; the <img> got a blob URL
    expect(root.querySelector('img[data-cv="image"]').getAttribute("src")).toMatch(/^blob:/);
  });
});

describe("fraction255", () => {
  it("formats multiples of 1/255 as k/255 and parses typed fractions", () => {
    expect(formatValue(4 / 255, "fraction255")).toBe("4/255");
    expect(formatValue(0.01569, "fraction255")).toBe("0.01569");
    expect(formatValue(0, "fraction255")).toBe("0");
    expect(formatValue(1, "fraction255")).toBe("255/255");
    expect(formatValue(4 / 255, "")).toBe("0.01569");
    expect(parseNumber("4/255")).toBe(4 / 255);
    expect(parseNumber(" 8 / 255 ")).toBe(8 / 255);
    expect(parseNumber("0.5")).toBe(0.5);
    expect(parseNumber("1e-3")).toBe(0.001);
    expect(parseNumber("4/0")).toBeNaN();
    expect(parseNumber("abc")).toBeNaN();
    expect(parseNumber("")).toBeNaN();
  });

  it("a fraction255 slider reads 4/255 and accepts a typed 8/255", () => {
    const { model, view, q } = controls({ controls: [{ trait: "epsilon", kind: "slider", min: 0, max: 32 / 255, format: "fraction255" }], epsilon: 4 / 255 });
    const box = view.el.querySelector('[data-cv-readout="epsilon"]');
    expect(box.value).toBe("4/255");
    expect(q("epsilon").getAttribute("aria-valuetext")).toBe("4/255");
    box.value = "8/255";
    fire(box, "input");
    key(box, "Enter");
    expect(model.writesOf("epsilon")).toEqual([8 / 255]);
    expect(box.value).toBe("8/255");
    box.value = "nonsense";
    fire(box, "change");
    expect(box.value).toBe("8/255"); // not a number: the model's value again
    expect(model.writesOf("epsilon")).toEqual([8 / 255]);
  });

  it("a fraction255 float input is a text box that accepts 4/255", () => {
    const { model, q } = controls({ controls: [{ trait: "eps", kind: "float", format: "fraction255" }], eps: 0.1 });
    expect(q("eps").type).toBe("text");
    expect(q("eps").value).toBe("0.1");
    q("eps").value = "4/255";
    key(q("eps"), "Enter");
    expect(model.writesOf("eps")).toEqual([4 / 255]);
    expect(q("eps").value).toBe("4/255");
  });

  it("plain sliders keep their readout", () => {
    const { view } = controls({ controls: [{ trait: "lr", kind: "slider", min: 0, max: 1 }], lr: 0.05 });
    const out = view.el.querySelector('[data-cv-readout="lr"]');
    expect(out.tagName).toBe("OUTPUT");
    expect(out.textContent).toBe("0.05");
  });
});

describe("groups and layout", () => {
  const specs = [
    { trait: "unit", kind: "int", group: "Objective" },
    { trait: "l2", kind: "float", group: "Regularizers", collapsed: true },
    { trait: "tv", kind: "float", group: "Regularizers" },
    { trait: "seed", kind: "int" },
  ];

  it("groups are <details>: open unless a control says collapsed, untitled controls are plain", () => {
    const { view } = controls({ controls: specs, unit: 0, l2: 0, tv: 0, seed: 0 });
    const groups = [...view.el.querySelectorAll("details.cv-group")];
    expect(groups.map((g) => g.querySelector("summary").textContent)).toEqual(["Objective", "Regularizers"]);
    expect(groups.map((g) => g.open)).toEqual([true, false]);
    expect(view.el.querySelector('[data-cv-group=""]').tagName).toBe("DIV");
    expect(groups[1].querySelectorAll("[data-cv-control]")).toHaveLength(2);
  });

  it("a group the user opened stays open when the controls are re-rendered", () => {
    const { model, view } = controls({ controls: specs, unit: 0, l2: 0, tv: 0, seed: 0 });
    const reg = () => view.el.querySelector('[data-cv-group="Regularizers"]');
    reg().open = true;
    reg().dispatchEvent(new Event("toggle"));
    model.py("controls", [...specs, { trait: "extra", kind: "int", group: "Objective" }]);
    expect(reg().open).toBe(true);
  });

  it("selects carry the chosen label whole in their title (hover); options too", () => {
    const long = "_blocks.8 (block, 112 channels, 14x14)";
    const { model, q } = controls({ controls: [{ trait: "layer", kind: "select", options: [[long, "_blocks.8"], ["_blocks.9", "_blocks.9"]] }], layer: "_blocks.8" });
    expect(q("layer").title).toBe(long);
    expect(q("layer").options[0].title).toBe(long);
    model.py("layer", "_blocks.9");
    expect(q("layer").title).toBe("_blocks.9");
  });

  it("the file input has a label of its own and says when no file is chosen", () => {
    const { view, q } = controls({ controls: [{ trait: "upload", kind: "upload", label: "Your image" }], upload: null });
    const pick = view.el.querySelector("label.cv-file-btn");
    expect(pick.getAttribute("for")).toBe(q("upload").id);
    expect(pick.textContent).toMatch(/Choose file/);
    expect(view.el.querySelector('[data-cv-upload="upload"]').textContent).toBe("no file chosen");
  });
});
