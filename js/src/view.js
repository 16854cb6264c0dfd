// One view of a widget: layout, Run/Stop, status/error, panels, and the frame stream
// (see js/PROTOCOL.md). Several views of one model work independently.

import { h, listen, on, Disposer } from "./dom.js";
import { ControlsView } from "./controls.js";
import { createPanel, waitForImage, downloadPng } from "./panels.js";
import { toBytes, bytesToBlob, firstBuffer } from "./codecs.js";

/** A frame whose picture has not decoded after this many ms is acknowledged anyway. */
export const DECODE_TIMEOUT_MS = 1500;
/** Shown while a view waits for the kernel's first answer (Run All keeps it busy). */
export const WAITING_TEXT = "waiting for the kernel\u2026";
/** Traits only the kernel sets: a change of any of them is an answer from the kernel. */
const KERNEL_TRAITS = ["running", "step", "total_steps", "status", "error", "image", "run_id", "history"];
/** Keys that still leave the widget (to the host's shortcuts): Escape, to leave a control. */
const KEYS_LEFT_TO_HOST = new Set(["Escape"]);
/** With Ctrl/Cmd, these keys edit text in a text box (copy, paste, undo...): they stay. */
const TEXT_EDIT_KEYS = new Set(["a", "c", "v", "x", "z", "y", "ArrowLeft", "ArrowRight", "Backspace", "Delete", "Home", "End"]);

/** Does a keydown inside the widget go on to the host (JupyterLab's shortcuts)? Escape does,
 * and Ctrl/Cmd combinations (save, command palette...) unless they edit text in a text box. */
export function keyGoesToHost(e) {
  if (KEYS_LEFT_TO_HOST.has(e.key)) return true;
  if (!(e.ctrlKey || e.metaKey)) return false;
  const t = e.target;
  const editable = t && (t.isContentEditable || (t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox" && t.type !== "file") || t.tagName === "TEXTAREA");
  return !(editable && TEXT_EDIT_KEYS.has(e.key.length === 1 ? e.key.toLowerCase() : e.key));
}

function num(v, fallback = 0) {
  const n = Number(v);
  return Number.isFinite(n) ? n : fallback;
}

/** A trait value as [[x, y], ...]: a list of numbers (x = index) or of [x, y] pairs. */
/** A chart trait's value for ChartPanel.draw: a `{"series": ...}` object as is, else seriesFromTrait. */
export function chartValue(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : seriesFromTrait(value);
}

export function seriesFromTrait(value) {
  if (!Array.isArray(value)) return [];
  const out = [];
  value.forEach((v, i) => {
    if (Array.isArray(v) && v.length >= 2) out.push([Number(v[0]), v[1] === null ? NaN : Number(v[1])]);
    else out.push([i, v === null ? NaN : Number(v)]);
  });
  return out;
}

function slug(s) {
  return (
    String(s || "")
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, 40) || "cnnvis"
  );
}

export class View {
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.d = new Disposer();
    this.panelD = new Disposer();
    this.closed = false;

    // Frame-stream state of this view.
    this.framesDrawn = 0;
    this.newestRun = num(model.get("run_id"), 0);
    this.frameRun = null; // run id of the last drawn frame
    this.frameStep = null; // its step
    this.frameTotal = null; // its total
    this.loss = new Map(); // step -> loss of the newest run ("history" series)
    this.lossFromFrames = false; // loss points of this run came from frames
    this.queue = Promise.resolve(); // pictures are drawn one at a time, in order
    this.pictureUrl = null; // object URL currently shown
    this.liveUrls = new Set(); // object URLs not yet revoked (pictures)
    this.tempUrls = new Map(); // download URLs -> revoke
    this.shownImageTrait = undefined; // `image` trait value last shown

    this.panels = [];

    this.root = h("div", {
      class: "cv-root",
      "data-cv": "root",
      "data-frames": "0",
      "data-step": "-1",
      "data-run-id": String(this.newestRun),
      "data-running": "false",
      "data-waiting": "false",
    });
    this.title = h("div", { class: "cv-title", "data-cv": "title" });
    this.runBtn = h("button", { type: "button", class: "cv-btn cv-run", "data-cv": "run", text: "Run", title: "Start a run" });
    this.stopBtn = h("button", { type: "button", class: "cv-btn cv-stop", "data-cv": "stop", text: "Stop", title: "Stop the run" });
    this.status = h("div", { class: "cv-status", "data-cv": "status", role: "status", "aria-live": "polite" });
    this.waiting = h("div", { class: "cv-waiting", "data-cv": "waiting", text: WAITING_TEXT });
    this.waiting.hidden = true;
    this.notice = h("div", { class: "cv-notice", "data-cv": "notice", role: "status" });
    this.notice.hidden = true;
    this.notices = new Set();
    this.error = h("div", { class: "cv-error", "data-cv": "error", role: "alert" });
    this.messages = h("div", { class: "cv-messages" });
    this.controls = new ControlsView(model);
    this.d.add(() => this.controls.dispose());
    this.panelsEl = h("div", { class: "cv-panels", "data-cv": "panels" });
    this.root.append(
      this.title,
      h(
        "div",
        { class: "cv-body" },
        h("div", { class: "cv-side" }, h("div", { class: "cv-actions" }, this.runBtn, this.stopBtn), this.messages, this.controls.el),
        this.panelsEl,
      ),
    );
    el.appendChild(this.root);

    const m = (name, fn) => this.d.add(listen(model, `change:${name}`, fn));
    m("title", () => this.renderTitle());
    m("status", () => this.renderStatus());
    m("error", () => this.renderError());
    m("running", () => this.onRunning());
    m("step", () => this.renderProgress());
    m("total_steps", () => this.renderProgress());
    m("run_id", () => this.onRunIdTrait());
    m("image", () => this.onImageTrait());
    m("history", () => this.onHistoryTrait());
    m("panels", () => this.renderPanels());
    this.d.add(listen(model, "msg:custom", (msg, buffers) => this.onCustom(msg, buffers)));
    for (const t of KERNEL_TRAITS) m(t, () => this.kernelAnswered());
    this.d.add(
      on(this.runBtn, "click", () => {
        model.send({ type: "run" });
        this.awaitKernel();
      }),
    );
    this.d.add(on(this.stopBtn, "click", () => model.send({ type: "stop" })));
    // Keys typed inside the widget stay inside it: JupyterLab's notebook shortcuts listen on
    // the document (bubbling) and would take arrow keys from a focused slider (moving the active
    // cell instead), Enter from a number box, and letters (A, B, D D, M) as cell commands.
    // Escape and Ctrl/Cmd shortcuts (save...) still reach the host.
    this.d.add(
      on(this.root, "keydown", (e) => {
        if (!keyGoesToHost(e)) e.stopPropagation();
      }),
    );
    this.d.add(() => this.panelD.dispose());

    this.renderTitle();
    this.renderStatus();
    this.renderError();
    this.renderRunning();
    this.syncLossFromTrait(true);
    this.renderPanels();
    this.onImageTrait();

    model.send({ type: "ready" });
    // A widget that runs by itself starts when the kernel handles `ready`; during "Run All"
    // that is only after the last cell, so say why nothing is shown yet.
    // A later view of a widget that already ran (run_id > 0, a picture) has nothing to wait for.
    if (model.get("auto_run") !== false && !model.get("running") && !(num(model.get("run_id"), 0) > 0) && !toBytes(model.get("image")).length) this.awaitKernel();
  }

  // ------------------------------------------------------------ waiting for the kernel

  /** Show "waiting for the kernel…" until the next message or kernel trait change. */
  awaitKernel() {
    if (this.closed) return;
    this.waitingForKernel = true;
    this.waiting.hidden = false;
    this.root.setAttribute("data-waiting", "true");
    for (const p of this.panels) if (p.setWaiting) p.setWaiting(true);
  }

  kernelAnswered() {
    if (!this.waitingForKernel) return;
    this.waitingForKernel = false;
    this.waiting.hidden = true;
    this.root.setAttribute("data-waiting", "false");
    for (const p of this.panels) if (p.setWaiting) p.setWaiting(false);
  }

  /** A line saying that something cannot work in this host (shown once per kind). */
  addNotice(text) {
    if (this.notices.has(text)) return;
    this.notices.add(text);
    this.notice.textContent = [...this.notices].join("\n");
    this.notice.hidden = false;
    console.warn(`cnnvis_widgets: ${text}`);
  }

  // ------------------------------------------------------------ simple traits

  renderTitle() {
    const t = this.model.get("title");
    this.title.textContent = t ? String(t) : "";
    this.title.hidden = !t;
  }

  renderStatus() {
    const s = this.model.get("status");
    this.status.textContent = s ? String(s) : "";
  }

  renderError() {
    const e = this.model.get("error");
    this.error.textContent = e ? String(e) : "";
    this.error.hidden = !e;
  }

  renderRunning() {
    const running = Boolean(this.model.get("running"));
    this.root.setAttribute("data-running", running ? "true" : "false");
    this.stopBtn.disabled = !running;
    this.runBtn.classList.toggle("cv-busy", running);
  }

  onRunning() {
    this.renderRunning();
    if (!this.model.get("running")) {
      // The run ended: the traits now hold its final state.
      this.syncLossFromTrait(false, true);
      this.onImageTrait();
    }
    this.renderProgress();
  }

  // ------------------------------------------------------------ runs and the loss series

  startRun(run) {
    this.newestRun = run;
    this.loss = new Map();
    this.lossFromFrames = false;
    this.frameStep = null;
    this.frameTotal = null;
    this.renderCharts();
    this.renderProgress();
  }

  onRunIdTrait() {
    const r = num(this.model.get("run_id"), this.newestRun);
    // A new run clears the chart; its points then come from frames and later `history` updates.
    if (r > this.newestRun) this.startRun(r);
  }

  /** Take the loss series from the `history` trait: replace when not running (or when no frame
   * of this run fed it), otherwise only fill in steps the frames did not bring. With
   * onlyIfLonger, keep frame points unless the trait has at least as many. */
  syncLossFromTrait(force, onlyIfLonger = false) {
    const pts = seriesFromTrait(this.model.get("history"));
    const running = Boolean(this.model.get("running"));
    if (force || !running || !this.lossFromFrames) {
      if (onlyIfLonger && this.lossFromFrames && pts.length < this.loss.size) return;
      this.loss = new Map(pts);
      if (!running) this.lossFromFrames = false;
    } else {
      for (const [x, y] of pts) if (!this.loss.has(x)) this.loss.set(x, y);
    }
    this.renderCharts();
  }

  onHistoryTrait() {
    this.syncLossFromTrait(false);
  }

  addLosses(msg) {
    let pairs = Array.isArray(msg.losses) ? msg.losses : [];
    if (!pairs.length && msg.loss !== undefined && msg.step !== undefined) pairs = [[msg.step, msg.loss]];
    if (!pairs.length) return;
    for (const p of pairs) {
      if (Array.isArray(p) && p.length >= 2) this.loss.set(Number(p[0]), p[1] === null ? NaN : Number(p[1]));
    }
    this.lossFromFrames = true;
    this.renderCharts();
  }

  lossPoints() {
    return [...this.loss.entries()].sort((a, b) => a[0] - b[0]);
  }

  renderCharts() {
    let lossPts = null;
    for (const p of this.panels) {
      if (p.kind !== "chart") continue;
      if (p.trait === "history") p.draw(lossPts || (lossPts = this.lossPoints()));
      else p.draw(chartValue(this.model.get(p.trait)));
    }
  }

  // ------------------------------------------------------------ progress

  renderProgress() {
    const running = Boolean(this.model.get("running"));
    let step = num(this.model.get("step"), -1);
    let total = num(this.model.get("total_steps"), 0);
    if (running && this.frameRun === this.newestRun && this.frameStep !== null) {
      step = Math.max(step, this.frameStep);
      if (this.frameTotal) total = this.frameTotal;
    }
    // `step` is the index of the last completed step, so step + 1 steps are done.
    const done = step >= 0 ? step + 1 : 0;
    for (const p of this.panels) if (p.kind === "progress") p.set(done, total);
  }

  // ------------------------------------------------------------ panels

  renderPanels() {
    this.panelD.dispose();
    const specs = this.model.get("panels");
    const onDownload = (img, panel) => this.download(img, panel);
    // `index` is the position in the `panels` trait (click messages carry it).
    this.panels = (Array.isArray(specs) ? specs : [])
      .map((s, index) => (s && typeof s === "object" && !Array.isArray(s) ? createPanel(s, { model: this.model, index, onDownload }) : null))
      .filter(Boolean);
    for (const p of this.panels) this.panelD.add(() => p.dispose());
    this.panelsEl.replaceChildren(...this.panels.map((p) => p.el));
    // Status and error live in the first progress panel, else under the Run/Stop buttons.
    const prog = this.panels.find((p) => p.kind === "progress");
    (prog ? prog.slot : this.messages).append(this.waiting, this.status, this.error, this.notice);
    this.messages.hidden = Boolean(prog);
    for (const p of this.imagePanels()) p.setSrc(this.pictureUrl);
    for (const p of this.panels) if (p.setWaiting) p.setWaiting(Boolean(this.waitingForKernel));
    this.renderCharts();
    this.renderProgress();
    for (const p of this.panels) {
      if (p.kind === "chart" && p.trait !== "history") {
        this.panelD.add(listen(this.model, `change:${p.trait}`, () => this.renderCharts()));
      }
    }
  }

  /** The frame-fed image panels (those without a `trait` of their own). */
  imagePanels() {
    return this.panels.filter((p) => p.kind === "image" && !p.bound);
  }

  // ------------------------------------------------------------ pictures

  /** Queue a picture change; pictures are shown strictly in arrival order. */
  enqueue(job) {
    const next = this.queue.then(job);
    this.queue = next.catch((err) => console.error("cnnvis_widgets: drawing failed", err));
    return this.queue;
  }

  /** Show a picture blob in every image panel; resolves true once it has decoded. */
  async showBlob(blob) {
    if (this.closed) return false;
    const url = URL.createObjectURL(blob);
    this.liveUrls.add(url);
    this.pictureUrl = url;
    const panels = this.imagePanels();
    for (const p of panels) p.setSrc(url);
    const results = await Promise.all(panels.map((p) => waitForImage(p.img, DECODE_TIMEOUT_MS)));
    // Small pictures (e.g. 32 px) are enlarged with crisp pixels rather than blurred.
    for (const p of panels) p.img.classList.toggle("cv-pixelated", p.img.naturalWidth > 0 && p.img.naturalWidth < 128);
    // Revoke every older picture URL (the one shown now stays alive).
    for (const u of [...this.liveUrls]) {
      if (u !== url && u !== this.pictureUrl) {
        URL.revokeObjectURL(u);
        this.liveUrls.delete(u);
      }
    }
    return results.every(Boolean);
  }

  /** Show the `image` trait (PNG bytes) unless frames of a running run are being shown. */
  onImageTrait() {
    const value = this.model.get("image");
    if (value === this.shownImageTrait) return;
    const bytes = toBytes(value);
    if (!bytes.length) return;
    const running = Boolean(this.model.get("running"));
    if (running && this.frameRun === this.newestRun) return; // frames are newer
    this.shownImageTrait = value;
    const blob = bytesToBlob(bytes);
    this.enqueue(() => this.showBlob(blob));
  }

  // ------------------------------------------------------------ frames

  onCustom(msg, buffers) {
    if (this.closed || !msg) return;
    this.kernelAnswered();
    if (msg.type === "download") {
      this.saveDownload(msg, buffers);
      return;
    }
    if (msg.type !== "frame") return;
    const run = num(msg.run_id, this.newestRun);
    if (run < this.newestRun) {
      this.ack(msg); // an old run: ignored, but acknowledged so the sender never stalls
      return;
    }
    if (run > this.newestRun) this.startRun(run);
    this.addLosses(msg);
    const buf = firstBuffer(buffers, msg);
    const blob = buf ? bytesToBlob(buf, msg.mime) : null;
    if (!blob && msg.mime) {
      // The host dropped the binary part of the message: the picture follows the `image`
      // trait (a few times per second) instead of every frame.
      this.addNotice("this notebook host does not deliver binary messages: the picture is updated a few times per second instead of live");
    }
    this.enqueue(() => this.drawFrame(msg, run, blob));
  }

  async drawFrame(msg, run, blob) {
    if (this.closed) return;
    if (run < this.newestRun) {
      this.ack(msg);
      return;
    }
    const ok = blob ? await this.showBlob(blob) : true;
    if (this.closed) return;
    if (ok) {
      this.framesDrawn += 1;
      this.frameRun = run;
      if (msg.step !== undefined) this.frameStep = num(msg.step, this.frameStep);
      if (msg.total !== undefined) this.frameTotal = num(msg.total, this.frameTotal);
      this.root.setAttribute("data-frames", String(this.framesDrawn));
      if (msg.step !== undefined) this.root.setAttribute("data-step", String(msg.step));
      this.root.setAttribute("data-run-id", String(run));
      this.renderProgress();
    }
    this.ack(msg);
  }

  ack(msg) {
    if (this.closed || msg.seq === undefined || msg.seq === null) return;
    this.model.send({ type: "ack", seq: msg.seq });
  }

  // ------------------------------------------------------------ download

  download(img, panel) {
    const step = this.frameStep !== null ? this.frameStep : num(this.model.get("step"), 0);
    const name =
      panel && panel.bound
        ? `${slug(this.model.get("title"))}-${slug(panel.trait)}.png`
        : `${slug(this.model.get("title"))}-run${this.newestRun}-step${step}.png`;
    return downloadPng(img, name, {
      track: (url, revoke) => {
        const once = () => {
          if (!this.tempUrls.has(url)) return;
          this.tempUrls.delete(url);
          revoke();
        };
        this.tempUrls.set(url, once);
        return once;
      },
    });
  }

  /** `{type: "download", name, mime}` + buffers=[bytes]: save the file from the browser
   * (an <a download> on a blob URL; nothing goes over the network). */
  saveDownload(msg, buffers) {
    const name = String(msg.name || "cnnvis-download").replace(/[\\/]/g, "_");
    const buf = firstBuffer(buffers, msg);
    if (!buf) {
      this.addNotice(`${name}: this notebook host did not deliver the file's bytes (binary messages); save it from Python instead`);
      return false;
    }
    const blob = new Blob([buf], { type: String(msg.mime || "application/octet-stream") });
    const url = URL.createObjectURL(blob);
    const revoke = () => {
      if (!this.tempUrls.has(url)) return;
      this.tempUrls.delete(url);
      URL.revokeObjectURL(url);
    };
    this.tempUrls.set(url, revoke);
    const a = h("a", { href: url, download: name, class: "cv-hidden-link", "data-cv": "download-link" });
    a.style.display = "none";
    (this.root.ownerDocument.body || this.root).appendChild(a);
    a.click();
    a.remove();
    setTimeout(revoke, 60_000);
    this.root.setAttribute("data-downloads", String(Number(this.root.getAttribute("data-downloads") || 0) + 1));
    return true;
  }

  // ------------------------------------------------------------ cleanup

  dispose() {
    if (this.closed) return;
    // Tell the kernel this view is gone (it stops counting it; frames are not sent for it).
    try {
      this.model.send({ type: "goodbye" });
    } catch {
      /* the model may already be closed */
    }
    this.closed = true;
    this.d.dispose();
    for (const u of this.liveUrls) URL.revokeObjectURL(u);
    this.liveUrls.clear();
    for (const revoke of [...this.tempUrls.values()]) revoke();
    this.pictureUrl = null;
    this.root.remove();
  }
}
