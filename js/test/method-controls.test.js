// Controls of the method widgets: `upload` (file -> bytes trait + name) and `button` (action).
import { describe, it, expect, afterEach, vi } from "vitest";
import widget from "../src/index.js";
import { FakeModel, jpegBytes, pngBytes } from "./fake-model.js";
import { ControlsView, formatSize, UPLOAD_MAX_BYTES } from "../src/controls.js";
import { toBytes } from "../src/codecs.js";

function mount(state) {
  const model = new FakeModel(state);
  const view = new ControlsView(model);
  document.body.appendChild(view.el);
  const $ = (sel) => view.el.querySelector(sel);
  return { model, view, $ };
}

async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
}

/** Simulate the user choosing `file` in <input type=file>. */
function choose(input, file) {
  Object.defineProperty(input, "files", { value: [file], configurable: true });
  input.dispatchEvent(new Event("change", { bubbles: true }));
}

const UPLOAD = { trait: "upload", kind: "upload", label: "Your image", accept: "image/*", name_trait: "upload_name" };

afterEach(() => {
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

describe("upload control", () => {
  it("is a file input with accept and data-cv-control", () => {
    const { $ } = mount({ controls: [UPLOAD], upload: null });
    const input = $('[data-cv-control="upload"]');
    expect(input.tagName).toBe("INPUT");
    expect(input.type).toBe("file");
    expect(input.getAttribute("accept")).toBe("image/*");
    expect($('[data-cv-upload="upload"]').textContent).toBe("no file chosen");
  });

  it("sets the bytes trait (a DataView over exactly the file) and the name, then saves once", async () => {
    const { model, $ } = mount({ controls: [UPLOAD], upload: null, upload_name: "" });
    const bytes = jpegBytes(7);
    choose($('[data-cv-control="upload"]'), new File([bytes], "my <cat>.jpg", { type: "image/jpeg" }));
    await settle();
    expect(model.saves).toBe(1);
    expect(model.writes.map(([k]) => k)).toEqual(["upload_name", "upload"]);
    const v = model.get("upload");
    expect(v).toBeInstanceOf(DataView);
    // ipywidgets sends a view's whole buffer: the buffer must be exactly the file
    expect(v.byteOffset).toBe(0);
    expect(v.buffer.byteLength).toBe(bytes.length);
    expect([...toBytes(v)]).toEqual([...bytes]);
    expect(model.get("upload_name")).toBe("my <cat>.jpg");
    const info = $('[data-cv-upload="upload"]');
    expect(info.textContent).toBe("my <cat>.jpg (8 B)");
    expect(info.querySelector("cat")).toBeNull();
  });

  it("reads with FileReader when Blob.arrayBuffer is missing", async () => {
    const { model, $ } = mount({ controls: [{ trait: "upload", kind: "upload" }], upload: null });
    const file = new File([pngBytes(3)], "a.png", { type: "image/png" });
    Object.defineProperty(file, "arrayBuffer", { value: undefined });
    const spy = vi.spyOn(FileReader.prototype, "readAsArrayBuffer");
    choose($('[data-cv-control="upload"]'), file);
    await settle();
    await new Promise((r) => setTimeout(r, 20));
    await settle();
    expect(spy).toHaveBeenCalled();
    expect([...toBytes(model.get("upload"))]).toEqual([...pngBytes(3)]);
    expect(model.writes.map(([k]) => k)).toEqual(["upload"]); // no name_trait: only the bytes
  });

  it("refuses a file over max_bytes, writing nothing", async () => {
    const { model, $ } = mount({ controls: [{ ...UPLOAD, max_bytes: 4 }], upload: null });
    choose($('[data-cv-control="upload"]'), new File([jpegBytes()], "big.jpg"));
    await settle();
    expect(model.writes).toEqual([]);
    const info = $('[data-cv-upload="upload"]');
    expect(info.classList.contains("cv-upload-error")).toBe(true);
    expect(info.textContent).toContain("too large");
    expect(UPLOAD_MAX_BYTES).toBeGreaterThan(1e6);
  });

  it("shows the trait's name and size as Python changes them", () => {
    const { model, $ } = mount({ controls: [UPLOAD], upload: null, upload_name: "" });
    model.py("upload_name", "x.png");
    model.py("upload", new DataView(new ArrayBuffer(2048)));
    expect($('[data-cv-upload="upload"]').textContent).toBe("x.png (2.05 kB)");
    model.py("upload", new DataView(new ArrayBuffer(0)));
    expect($('[data-cv-upload="upload"]').textContent).toBe("no file chosen");
    expect(formatSize(3_400_000)).toBe("3.4 MB");
  });

  it("round trip: an image panel bound to the upload trait shows the chosen file (type sniffed)", async () => {
    const model = new FakeModel({
      controls: [UPLOAD],
      panels: [{ kind: "image", trait: "upload", label: "Uploaded" }],
      upload: new DataView(new ArrayBuffer(0)),
      upload_name: "",
    });
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model, el });
    const img = el.querySelector('img[data-cv="image"][data-cv-trait="upload"]');
    expect(img.hidden).toBe(true);
    choose(el.querySelector('[data-cv-control="upload"]'), new File([jpegBytes(1)], "photo.png"));
    await settle();
    expect(img.hidden).toBe(false);
    expect(img.getAttribute("src")).toMatch(/^blob:/);
    expect(img.getAttribute("data-mime")).toBe("image/jpeg"); // magic bytes, not the file name
    cleanup();
    expect(model.listenerCount()).toBe(0);
  });

  it("a read finishing after cleanup writes nothing", async () => {
    const { model, view, $ } = mount({ controls: [UPLOAD], upload: null });
    let resolve;
    const file = new File([pngBytes()], "late.png");
    Object.defineProperty(file, "arrayBuffer", { value: () => new Promise((r) => (resolve = r)) });
    choose($('[data-cv-control="upload"]'), file);
    view.dispose();
    resolve(pngBytes().buffer);
    await settle();
    expect(model.writes).toEqual([]);
  });
});

describe("button control", () => {
  it("sends {type: 'action', action} and carries data-cv-action", () => {
    const { model, $ } = mount({ controls: [{ kind: "button", label: "Train decoder", action: "train" }] });
    const btn = $('button[data-cv-action="train"]');
    expect(btn).not.toBeNull();
    expect(btn.textContent).toBe("Train decoder");
    btn.click();
    btn.click();
    expect(model.sent).toEqual([
      { type: "action", action: "train" },
      { type: "action", action: "train" },
    ]);
    expect(model.writes).toEqual([]);
  });

  it("follows changes of `controls` and visible_when", () => {
    const { model, $ } = mount({
      controls: [{ kind: "button", label: "Train", action: "train", visible_when: { trait: "mode", in: ["learned"] } }],
      mode: "learned",
    });
    const row = () => $('button[data-cv-action="train"]').closest(".cv-control");
    expect(row().hidden).toBe(false);
    model.py("mode", "other");
    expect(row().hidden).toBe(true);
    model.py("controls", [{ kind: "button", label: "Reset", action: "reset" }]);
    expect($('button[data-cv-action="train"]')).toBeNull();
    $('button[data-cv-action="reset"]').click();
    expect(model.sent).toEqual([{ type: "action", action: "reset" }]);
    expect(model.listenerCount("change:mode")).toBe(0);
  });
});
