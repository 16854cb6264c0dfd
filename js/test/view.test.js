import { describe, it, expect, afterEach, vi } from "vitest";
import widget from "../src/index.js";
import { FakeModel, pngBytes, jpegBytes, recordBlobs } from "./fake-model.js";

const PANELS = [{ kind: "image", label: "Image" }, { kind: "chart", label: "Loss", trait: "history" }, { kind: "progress" }];

function mount(state = {}) {
  const model = new FakeModel({ panels: PANELS, ...state });
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanupModel = widget.initialize({ model });
  const cleanup = widget.render({ model, el });
  const root = el.querySelector('[data-cv="root"]');
  const $ = (name) => el.querySelector(`[data-cv="${name}"]`);
  return { model, el, root, $, cleanup, cleanupModel };
}

function frame(model, { seq, run_id = 1, step = 0, total = 10, losses, mime = "image/jpeg", bytes = jpegBytes(seq) } = {}) {
  model.emitCustom({ type: "frame", seq, run_id, step, total, loss: losses ? losses[losses.length - 1][1] : 0, losses: losses ?? [[step, -step]], mime, width: 2, height: 2 }, bytes ? [bytes] : []);
}

/** Let the frame queue (decode + ack) run. */
async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
}

const acks = (model) => model.sent.filter((m) => m.type === "ack").map((m) => m.seq);

afterEach(() => {
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

describe("render", () => {
  it("builds root, title, run/stop, status and error, and sends ready once", () => {
    const { model, root, $ } = mount({ title: "Activation maximization" });
    expect(root.getAttribute("data-frames")).toBe("0");
    expect($("title").textContent).toBe("Activation maximization");
    expect($("run")).not.toBeNull();
    expect($("stop")).not.toBeNull();
    expect($("status")).not.toBeNull();
    expect($("error").hidden).toBe(true);
    expect($("image").tagName).toBe("IMG");
    expect($("chart")).not.toBeNull();
    expect(model.sent.filter((m) => m.type === "ready")).toHaveLength(1);
  });

  it("exports initialize and render returning cleanup functions", () => {
    expect(typeof widget.initialize).toBe("function");
    expect(typeof widget.render).toBe("function");
    const { cleanup, cleanupModel } = mount();
    expect(typeof cleanup).toBe("function");
    expect(typeof cleanupModel).toBe("function");
  });

  it("places status/error in the progress panel, or under the buttons without one", () => {
    const { model, el, $ } = mount();
    expect($("status").closest('[data-cv-panel="progress"]')).not.toBeNull();
    model.py("panels", [{ kind: "image" }]);
    expect($("status").closest('[data-cv-panel="progress"]')).toBeNull();
    expect(el.querySelectorAll('[data-cv="status"]')).toHaveLength(1);
    expect(el.querySelectorAll('[data-cv="error"]')).toHaveLength(1);
  });
});

describe("status, error, run/stop", () => {
  it("error line shows text and hides when empty", () => {
    const { model, $ } = mount();
    model.py("error", "CUDA out of memory");
    expect($("error").hidden).toBe(false);
    expect($("error").textContent).toBe("CUDA out of memory");
    model.py("error", "");
    expect($("error").hidden).toBe(true);
    expect($("error").textContent).toBe("");
  });

  it("status line follows the trait, as text", () => {
    const { model, $ } = mount();
    model.py("status", "step <b>3</b>/10");
    expect($("status").textContent).toBe("step <b>3</b>/10");
    expect($("status").querySelector("b")).toBeNull();
  });

  it("Run and Stop send their messages; Stop is enabled only while running", () => {
    const { model, $ } = mount();
    expect($("stop").disabled).toBe(true);
    $("run").click();
    model.py("running", true);
    expect($("stop").disabled).toBe(false);
    $("stop").click();
    expect(model.sent.filter((m) => m.type !== "ready")).toEqual([{ type: "run" }, { type: "stop" }]);
  });

  it("progress bar follows step/total_steps", () => {
    const { model, $ } = mount({ total_steps: 10, step: -1 });
    expect($("progress").getAttribute("aria-valuenow")).toBe("0");
    model.py("running", true);
    model.py("step", 4);
    expect($("progress").getAttribute("aria-valuenow")).toBe("5");
    expect($("progress").getAttribute("data-value")).toBe("0.5000");
  });
});

describe("frames", () => {
  it("draws a frame into the image, counts it and acks its seq after decoding", async () => {
    const created = recordBlobs();
    const { model, root, $ } = mount({ run_id: 1, running: true });
    let release;
    const decoded = new Promise((r) => (release = r));
    vi.spyOn(HTMLImageElement.prototype, "decode").mockImplementation(() => decoded);
    frame(model, { seq: 5, step: 3 });
    await settle();
    expect(acks(model)).toEqual([]); // not acked before the picture decoded
    expect(root.getAttribute("data-frames")).toBe("0");
    release();
    await settle();
    expect(acks(model)).toEqual([5]);
    expect(root.getAttribute("data-frames")).toBe("1");
    expect(root.getAttribute("data-step")).toBe("3");
    expect(root.getAttribute("data-run-id")).toBe("1");
    expect($("image").getAttribute("src")).toMatch(/^blob:/);
    expect(created[0].type).toBe("image/jpeg");
    expect(created[0].size).toBe(jpegBytes(5).length);
  });

  it("acks every frame in order and revokes the URLs of replaced pictures", async () => {
    const revoked = [];
    vi.spyOn(URL, "revokeObjectURL").mockImplementation((u) => revoked.push(u));
    const { model, root, $ } = mount({ run_id: 1, running: true });
    frame(model, { seq: 1, step: 0 });
    frame(model, { seq: 2, step: 1 });
    frame(model, { seq: 3, step: 2 });
    await settle();
    expect(acks(model)).toEqual([1, 2, 3]);
    expect(root.getAttribute("data-frames")).toBe("3");
    expect(root.getAttribute("data-step")).toBe("2");
    const current = $("image").getAttribute("src");
    expect(revoked).toHaveLength(2);
    expect(revoked).not.toContain(current);
  });

  it("accepts ArrayBuffer buffers as well as DataView", async () => {
    const { model, root } = mount({ run_id: 1 });
    model.emit("msg:custom", { type: "frame", seq: 9, run_id: 1, step: 0, total: 1, losses: [[0, 1]], mime: "image/png" }, [pngBytes().buffer]);
    await settle();
    expect(acks(model)).toEqual([9]);
    expect(root.getAttribute("data-frames")).toBe("1");
  });

  it("ignores frames of an older run (acked so the sender never stalls, but not drawn)", async () => {
    const { model, root, $ } = mount({ run_id: 1, running: true });
    frame(model, { seq: 1, run_id: 2, step: 5 });
    await settle();
    const src = $("image").getAttribute("src");
    frame(model, { seq: 2, run_id: 1, step: 9, losses: [[9, 123]] });
    await settle();
    expect(root.getAttribute("data-frames")).toBe("1");
    expect(root.getAttribute("data-step")).toBe("5");
    expect(root.getAttribute("data-run-id")).toBe("2");
    expect($("image").getAttribute("src")).toBe(src);
    expect($("chart").getAttribute("data-points")).toBe("1");
    expect(acks(model)).toEqual([1, 2]);
  });

  it("ignores frames older than the run_id trait seen at render", async () => {
    const { model, root } = mount({ run_id: 3 });
    frame(model, { seq: 1, run_id: 2 });
    await settle();
    expect(root.getAttribute("data-frames")).toBe("0");
  });

  it("an image that fails to decode is still acked, but not counted", async () => {
    const { model, root } = mount({ run_id: 1 });
    vi.spyOn(HTMLImageElement.prototype, "decode").mockImplementation(() => Promise.reject(new Error("EncodingError")));
    frame(model, { seq: 4 });
    await settle();
    expect(acks(model)).toEqual([4]);
    expect(root.getAttribute("data-frames")).toBe("0");
  });

  it("ignores other custom messages", async () => {
    const { model, root } = mount();
    model.emitCustom({ type: "something-else", seq: 1 });
    await settle();
    expect(acks(model)).toEqual([]);
    expect(root.getAttribute("data-frames")).toBe("0");
  });
});

describe("loss chart", () => {
  it("is fed by frame losses while running, and a new run_id clears it", async () => {
    const { model, $ } = mount({ run_id: 1, running: true });
    frame(model, { seq: 1, run_id: 1, losses: [[0, 5], [1, 4], [2, 3]] });
    frame(model, { seq: 2, run_id: 1, losses: [[3, 2.5]] });
    await settle();
    const chart = $("chart");
    expect(chart.getAttribute("data-points")).toBe("4");
    expect(chart.querySelector("polyline").getAttribute("points").split(" ")).toHaveLength(4);
    // new run via the trait
    model.py("run_id", 2);
    expect(chart.getAttribute("data-points")).toBe("0");
    expect(chart.querySelector("polyline").getAttribute("points")).toBe("");
    frame(model, { seq: 3, run_id: 2, losses: [[0, 9]] });
    await settle();
    expect(chart.getAttribute("data-points")).toBe("1");
    // new run via a frame
    frame(model, { seq: 4, run_id: 3, losses: [[0, 1], [1, 0.5]] });
    await settle();
    expect(chart.getAttribute("data-points")).toBe("2");
  });

  it("uses the history trait when not running", () => {
    const { model, $ } = mount({ history: [3, 2, 1] });
    expect($("chart").getAttribute("data-points")).toBe("3");
    model.py("history", [5, 4, 3, 2, 1]);
    expect($("chart").getAttribute("data-points")).toBe("5");
    const pts = $("chart")
      .querySelector("polyline")
      .getAttribute("points")
      .split(" ")
      .map((p) => p.split(",").map(Number));
    // decreasing loss: y (SVG, down is larger) increases left to right
    expect(pts[0][1]).toBeLessThan(pts[4][1]);
    expect(pts[0][0]).toBeLessThan(pts[4][0]);
  });

  it("while running, a low-rate history update does not drop frame points", async () => {
    const { model, $ } = mount({ run_id: 1, running: true });
    frame(model, { seq: 1, losses: [[0, 5], [1, 4], [2, 3], [3, 2]] });
    await settle();
    model.py("history", [5, 4]);
    expect($("chart").getAttribute("data-points")).toBe("4");
  });

  it("when a run ends before its final history arrives, the streamed points stay", async () => {
    const { model, $ } = mount({ run_id: 1, running: true });
    frame(model, { seq: 1, losses: [[0, 5], [1, 4], [2, 3], [3, 2]] });
    await settle();
    model.py("history", [5, 4]); // a low-rate update, behind the frames
    model.py("running", false);
    expect($("chart").getAttribute("data-points")).toBe("4");
    model.py("history", [5, 4, 3, 2, 1]); // the final history
    expect($("chart").getAttribute("data-points")).toBe("5");
  });

  it("at the end of a run the final history replaces the streamed points", async () => {
    const { model, $ } = mount({ run_id: 1, running: true });
    frame(model, { seq: 1, losses: [[0, 5], [1, 4]] });
    await settle();
    model.py("history", [5, 4, 3, 2, 1, 0]);
    model.py("running", false);
    expect($("chart").getAttribute("data-points")).toBe("6");
  });
});

describe("image trait fallback and download", () => {
  it("shows the image trait (DataView or ArrayBuffer) when no frame has arrived", async () => {
    const { model, $ } = mount({ image: new DataView(pngBytes(1).buffer) });
    await settle();
    const src1 = $("image").getAttribute("src");
    expect(src1).toMatch(/^blob:/);
    expect($("image").hidden).toBe(false);
    model.py("image", pngBytes(2).buffer);
    await settle();
    expect($("image").getAttribute("src")).not.toBe(src1);
  });

  it("does not let the low-rate image trait replace frames while running", async () => {
    const { model, $ } = mount({ run_id: 1, running: true });
    frame(model, { seq: 1 });
    await settle();
    const src = $("image").getAttribute("src");
    model.py("image", new DataView(pngBytes(3).buffer));
    await settle();
    expect($("image").getAttribute("src")).toBe(src);
    model.py("running", false); // the run ended: the trait holds the final picture
    await settle();
    expect($("image").getAttribute("src")).not.toBe(src);
  });

  it("download PNG draws the picture on a canvas and clicks an <a download>", async () => {
    const { model, $ } = mount({ run_id: 1, title: "Feature Vis" });
    frame(model, { seq: 1, step: 7 });
    await settle();
    const img = $("image");
    Object.defineProperty(img, "naturalWidth", { value: 4 });
    Object.defineProperty(img, "naturalHeight", { value: 3 });
    const drawImage = vi.fn();
    vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(() => ({ drawImage }));
    vi.spyOn(HTMLCanvasElement.prototype, "toBlob").mockImplementation(function (cb, type) {
      cb(new Blob([new Uint8Array([1])], { type }));
    });
    const clicks = [];
    vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function () {
      clicks.push({ download: this.getAttribute("download"), href: this.getAttribute("href") });
    });
    $("download").click();
    await settle();
    expect(drawImage).toHaveBeenCalledWith(img, 0, 0, 4, 3);
    expect(HTMLCanvasElement.prototype.toBlob.mock.calls[0][1]).toBe("image/png");
    expect(clicks).toHaveLength(1);
    expect(clicks[0].download).toBe("feature-vis-run1-step7.png");
    expect(clicks[0].href).toMatch(/^blob:/);
  });
});

describe("views and cleanup", () => {
  it("cleanup removes every listener and revokes every object URL", async () => {
    const revoked = [];
    vi.spyOn(URL, "revokeObjectURL").mockImplementation((u) => revoked.push(u));
    const { model, el, $, cleanup } = mount({
      run_id: 1,
      controls: [{ trait: "unit", kind: "slider", min: 0, max: 9, max_trait: "unit_max" }],
      unit: 1,
      unit_max: 9,
    });
    frame(model, { seq: 1 });
    await settle();
    const src = $("image").getAttribute("src");
    expect(model.listenerCount()).toBeGreaterThan(5);
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(revoked).toContain(src);
    expect(el.children).toHaveLength(0);
    // frames after cleanup are not acked by this view
    const before = model.sent.length;
    frame(model, { seq: 2 });
    await settle();
    expect(model.sent.length).toBe(before);
  });

  it("two views of one model work independently", async () => {
    const model = new FakeModel({ panels: PANELS, run_id: 1 });
    const el1 = document.createElement("div");
    const el2 = document.createElement("div");
    document.body.append(el1, el2);
    const c1 = widget.render({ model, el: el1 });
    const c2 = widget.render({ model, el: el2 });
    expect(model.sent.filter((m) => m.type === "ready")).toHaveLength(2);
    frame(model, { seq: 1 });
    await settle();
    expect(acks(model)).toEqual([1, 1]);
    c1();
    frame(model, { seq: 2 });
    await settle();
    expect(acks(model)).toEqual([1, 1, 2]);
    expect(el2.querySelector('[data-cv="root"]').getAttribute("data-frames")).toBe("2");
    c2();
    expect(model.listenerCount()).toBe(0);
  });
});
