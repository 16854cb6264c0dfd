import { describe, it, expect, beforeEach, afterEach, vi } from "vitest";
import { FakeModel, fire, dragTo, release } from "./fake-model.js";
import { ControlsView, logPosToValue, logValueToPos, LOG_STEPS, THROTTLE_MS, matchesQuery, normalizeOptions } from "../src/controls.js";

function mount(state) {
  const model = new FakeModel(state);
  const view = new ControlsView(model);
  document.body.appendChild(view.el);
  const q = (trait) => view.el.querySelector(`[data-cv-control="${trait}"]`);
  const row = (trait) => view.el.querySelector(`[data-cv-row="${trait}"]`);
  return { model, view, q, row };
}

afterEach(() => {
  vi.useRealTimers();
  document.body.replaceChildren();
});

describe("control rendering", () => {
  it("renders each kind with data-cv-control and the model's values", () => {
    const { q } = mount({
      controls: [
        { trait: "unit", kind: "slider", label: "Unit", min: 0, max: 31, step: 1 },
        { trait: "steps", kind: "int", label: "Steps", min: 1, max: 1000 },
        { trait: "lr", kind: "float", label: "LR" },
        { trait: "objective", kind: "select", label: "Objective", options: [["Channel", "channel"], ["Neuron", "neuron"]] },
        { trait: "mode", kind: "toggle", options: [["A", "a"], ["B", "b"]] },
        { trait: "fft", kind: "checkbox", label: "FFT" },
        { trait: "name", kind: "text" },
      ],
      unit: 7,
      steps: 512,
      lr: 0.05,
      objective: "neuron",
      mode: "b",
      fft: true,
      name: "hello",
    });
    expect(q("unit").type).toBe("range");
    expect(q("unit").value).toBe("7");
    expect(q("unit").max).toBe("31");
    expect(q("steps").type).toBe("number");
    expect(q("steps").value).toBe("512");
    expect(q("lr").value).toBe("0.05");
    expect(q("objective").tagName).toBe("SELECT");
    expect(q("objective").value).toBe("neuron");
    expect(q("mode").querySelector('[aria-pressed="true"]').textContent).toBe("B");
    expect(q("fft").checked).toBe(true);
    expect(q("name").value).toBe("hello");
  });

  it("lays out groups in order of first appearance with their titles", () => {
    const { view } = mount({
      controls: [
        { trait: "a", kind: "int", group: "Objective" },
        { trait: "b", kind: "int", group: "Render" },
        { trait: "c", kind: "int", group: "Objective" },
      ],
    });
    const groups = [...view.el.querySelectorAll("details.cv-group")];
    expect(groups.map((g) => g.querySelector("summary").textContent)).toEqual(["Objective", "Render"]);
    expect([...groups[0].querySelectorAll("[data-cv-control]")].map((e) => e.dataset.cvControl)).toEqual(["a", "c"]);
  });

  it("shows labels as text, never as HTML", () => {
    const { view } = mount({ controls: [{ trait: "x", kind: "text", label: "<b>bold</b>" }] });
    const label = view.el.querySelector("label");
    expect(label.textContent).toBe("<b>bold</b>");
    expect(label.querySelector("b")).toBeNull();
  });

  it("re-renders when the controls trait changes", () => {
    const { model, q } = mount({ controls: [{ trait: "a", kind: "int" }], a: 1, b: 2 });
    expect(q("a")).not.toBeNull();
    model.py("controls", [{ trait: "b", kind: "int" }]);
    expect(q("a")).toBeNull();
    expect(q("b").value).toBe("2");
    // the old control's listeners are gone
    expect(model.listenerCount("change:a")).toBe(0);
  });
});

describe("slider", () => {
  beforeEach(() => vi.useFakeTimers());

  it("throttles writes while dragging to one per 100 ms and always writes on release", () => {
    const { model, q } = mount({ controls: [{ trait: "unit", kind: "slider", min: 0, max: 100, step: 1 }], unit: 0 });
    const input = q("unit");
    fire(input, "pointerdown");
    dragTo(input, 10); // leading write
    expect(model.writesOf("unit")).toEqual([10]);
    vi.advanceTimersByTime(20);
    dragTo(input, 11);
    vi.advanceTimersByTime(20);
    dragTo(input, 12);
    vi.advanceTimersByTime(20);
    dragTo(input, 13);
    expect(model.writesOf("unit")).toEqual([10]); // throttled
    vi.advanceTimersByTime(THROTTLE_MS); // trailing write with the latest value
    expect(model.writesOf("unit")).toEqual([10, 13]);
    dragTo(input, 40);
    dragTo(input, 41);
    release(input); // release: final value written at once
    expect(model.writesOf("unit")).toEqual([10, 13, 41]);
    expect(model.get("unit")).toBe(41);
    vi.advanceTimersByTime(500); // no stray trailing write after release
    expect(model.writesOf("unit")).toEqual([10, 13, 41]);
    expect(model.saves).toBe(3);
  });

  it("writes on release even when every drag step was throttled away", () => {
    const { model, q } = mount({ controls: [{ trait: "v", kind: "slider", min: 0, max: 10, step: 1 }], v: 0 });
    const input = q("v");
    dragTo(input, 3);
    dragTo(input, 4);
    dragTo(input, 5);
    release(input);
    expect(model.writesOf("v")).toEqual([3, 5]);
  });

  it("updates the readout while dragging", () => {
    const { view, q } = mount({ controls: [{ trait: "v", kind: "slider", min: 0, max: 1, step: 0.1 }], v: 0.5 });
    const readout = view.el.querySelector(".cv-readout");
    expect(readout.textContent).toBe("0.5");
    dragTo(q("v"), 0.7);
    expect(readout.textContent).toBe("0.7");
  });

  it("maps a log slider between min and max on a log10 scale", () => {
    expect(logPosToValue(0, 1e-4, 1)).toBeCloseTo(1e-4, 10);
    expect(logPosToValue(LOG_STEPS, 1e-4, 1)).toBeCloseTo(1, 10);
    expect(logPosToValue(LOG_STEPS / 2, 1e-4, 1)).toBeCloseTo(0.01, 10);
    expect(logPosToValue(LOG_STEPS / 4, 1e-4, 1)).toBeCloseTo(0.001, 10);
    expect(logValueToPos(0.01, 1e-4, 1)).toBe(LOG_STEPS / 2);
    expect(logValueToPos(1e-4, 1e-4, 1)).toBe(0);
    // round trip keeps 3 significant digits
    expect(logPosToValue(logValueToPos(0.05, 1e-4, 1), 1e-4, 1)).toBeCloseTo(0.05, 3);

    const { model, q, view } = mount({ controls: [{ trait: "lr", kind: "slider", log: true, min: 1e-4, max: 1 }], lr: 0.01 });
    const input = q("lr");
    expect(input.value).toBe(String(LOG_STEPS / 2));
    expect(view.el.querySelector(".cv-readout").textContent).toBe("0.01");
    dragTo(input, (3 * LOG_STEPS) / 4);
    release(input);
    expect(model.get("lr")).toBeCloseTo(0.1, 10);
  });

  it("follows max_trait (the unit range follows the layer)", () => {
    const { model, q } = mount({ controls: [{ trait: "unit", kind: "slider", min: 0, max: 31, max_trait: "unit_max", step: 1 }], unit: 3, unit_max: 63 });
    expect(q("unit").max).toBe("63");
    model.py("unit_max", 15);
    expect(q("unit").max).toBe("15");
    dragTo(q("unit"), 50); // the browser clamps the range input to its max
    release(q("unit"));
    expect(model.get("unit")).toBeLessThanOrEqual(15);
  });

  it("does not jump under the pointer while dragging; shows the model value after release", () => {
    vi.useFakeTimers();
    const { model, q } = mount({ controls: [{ trait: "v", kind: "slider", min: 0, max: 10, step: 1 }], v: 1 });
    const input = q("v");
    fire(input, "pointerdown");
    dragTo(input, 2); // written at once
    vi.advanceTimersByTime(THROTTLE_MS / 2);
    dragTo(input, 6); // throttled: pending
    model.py("v", 2); // the kernel echoes the first write late
    expect(input.value).toBe("6");
    vi.advanceTimersByTime(THROTTLE_MS);
    release(input);
    expect(model.get("v")).toBe(6);
    expect(input.value).toBe("6");
    model.py("v", 3); // not dragging any more: follows Python
    expect(input.value).toBe("3");
  });

  it("follows the trait when Python changes it", () => {
    const { model, q } = mount({ controls: [{ trait: "v", kind: "slider", min: 0, max: 10, step: 1 }], v: 1 });
    model.py("v", 8);
    expect(q("v").value).toBe("8");
    expect(q("v").getAttribute("data-value")).toBe("8");
  });
});

describe("visible_when", () => {
  it("shows a control only while the other trait is in the list, and hides empty groups", () => {
    const { model, row, view } = mount({
      controls: [
        { trait: "objective", kind: "select", options: [["channel", "channel"], ["neuron", "neuron"], ["layer", "layer"]], group: "Objective" },
        { trait: "unit", kind: "int", group: "Unit", visible_when: { trait: "objective", in: ["channel", "neuron"] } },
      ],
      objective: "channel",
      unit: 0,
    });
    const unitGroup = view.el.querySelector('[data-cv-group="Unit"]');
    expect(row("unit").hidden).toBe(false);
    expect(unitGroup.hidden).toBe(false);
    model.py("objective", "layer");
    expect(row("unit").hidden).toBe(true);
    expect(unitGroup.hidden).toBe(true);
    // a change made in the browser counts too
    const sel = view.el.querySelector('[data-cv-control="objective"]');
    sel.value = "neuron";
    fire(sel, "change");
    expect(model.get("objective")).toBe("neuron");
    expect(row("unit").hidden).toBe(false);
  });
});

describe("select, toggle, number, checkbox, text", () => {
  it("select writes the option's typed value and follows options_trait", () => {
    const { model, q } = mount({ controls: [{ trait: "layer", kind: "select", options_trait: "layers" }], layers: [["conv1", 0], ["conv2", 1]], layer: 0 });
    const sel = q("layer");
    expect([...sel.options].map((o) => o.textContent)).toEqual(["conv1", "conv2"]);
    sel.selectedIndex = 1;
    fire(sel, "change");
    expect(model.writesOf("layer")).toEqual([1]); // a number, not "1"
    model.py("layers", [["a", 0], ["b", 1], ["c", 2]]);
    expect([...sel.options].map((o) => o.textContent)).toEqual(["a", "b", "c"]);
    expect(sel.selectedIndex).toBe(1);
  });

  it("toggle buttons write their value", () => {
    const { model, q } = mount({ controls: [{ trait: "mode", kind: "toggle", options: [["Fast", "fast"], ["Slow", "slow"]] }], mode: "fast" });
    const btns = q("mode").querySelectorAll("button");
    btns[1].click();
    expect(model.writesOf("mode")).toEqual(["slow"]);
    expect(btns[1].getAttribute("aria-pressed")).toBe("true");
    expect(btns[0].getAttribute("aria-pressed")).toBe("false");
  });

  it("int input rounds, sends out-of-range values to the kernel to judge, reverts garbage", () => {
    const { model, q } = mount({ controls: [{ trait: "n", kind: "int", min: 1, max: 10 }], n: 5 });
    const input = q("n");
    input.value = "7.6";
    fire(input, "change");
    expect(model.writesOf("n")).toEqual([8]);
    // not clamped to 10 silently: the kernel refuses 99 with a message and sends its value back
    input.value = "99";
    fire(input, "change");
    expect(model.writesOf("n")).toEqual([8, 99]);
    input.value = "";
    fire(input, "change");
    expect(model.writesOf("n")).toEqual([8, 99]);
    expect(input.value).toBe("99");
  });

  it("float input, checkbox and text write on change", () => {
    const { model, q } = mount({
      controls: [
        { trait: "lr", kind: "float" },
        { trait: "fft", kind: "checkbox" },
        { trait: "name", kind: "text" },
      ],
      lr: 0.05,
      fft: false,
      name: "",
    });
    q("lr").value = "0.125";
    fire(q("lr"), "change");
    q("fft").checked = true;
    fire(q("fft"), "change");
    q("name").value = "abc";
    fire(q("name"), "change");
    expect(model.writes).toEqual([
      ["lr", 0.125],
      ["fft", true],
      ["name", "abc"],
    ]);
  });
});

describe("search", () => {
  const classes = Array.from({ length: 1000 }, (_, i) => [`${i} class${i}`, i]);
  classes[207] = ["207 golden retriever", 207];
  classes[208] = ["208 Labrador retriever", 208];
  classes[1] = ["1 goldfish", 1];

  it("filters a long option list by text and writes the chosen value", () => {
    const { model, view, q } = mount({ controls: [{ trait: "cls", kind: "search", label: "Class", options_trait: "classes" }], classes, cls: 0 });
    const list = q("cls");
    const filter = view.el.querySelector('[data-cv-search="cls"]');
    expect(list.options.length).toBe(1000);
    filter.value = "retriever";
    fire(filter, "input");
    expect([...list.options].map((o) => o.textContent)).toEqual(["207 golden retriever", "208 Labrador retriever"]);
    filter.value = "GOLDEN ret";
    fire(filter, "input");
    expect([...list.options].map((o) => o.value)).toEqual(["207"]);
    list.selectedIndex = 0;
    fire(list, "change");
    expect(model.writesOf("cls")).toEqual([207]);
    expect(view.el.querySelector('[data-cv-current="cls"]').textContent).toBe("207 golden retriever");
  });

  it("Enter in the filter picks the first match", () => {
    const { model, view } = mount({ controls: [{ trait: "cls", kind: "search", options: classes }], cls: 0 });
    const filter = view.el.querySelector('[data-cv-search="cls"]');
    filter.value = "goldfish";
    fire(filter, "input");
    filter.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(model.writesOf("cls")).toEqual([1]);
  });

  it("matchesQuery matches all tokens in label or value", () => {
    expect(matchesQuery({ label: "golden retriever", value: 207 }, "ret gold")).toBe(true);
    expect(matchesQuery({ label: "golden retriever", value: 207 }, "207")).toBe(true);
    expect(matchesQuery({ label: "golden retriever", value: 207 }, "cat")).toBe(false);
  });
});

describe("normalizeOptions", () => {
  it("accepts pairs, objects and plain values", () => {
    expect(normalizeOptions([["A", 1], { label: "B", value: 2 }, "c"])).toEqual([
      { label: "A", value: 1 },
      { label: "B", value: 2 },
      { label: "c", value: "c" },
    ]);
  });
});

describe("cleanup", () => {
  it("dispose removes every model listener", () => {
    const { model, view } = mount({
      controls: [
        { trait: "unit", kind: "slider", min: 0, max: 3, max_trait: "unit_max", visible_when: { trait: "objective", in: ["channel"] } },
        { trait: "objective", kind: "select", options: [["c", "channel"]] },
      ],
      unit: 0,
      unit_max: 3,
      objective: "channel",
    });
    expect(model.listenerCount()).toBeGreaterThan(3);
    view.dispose();
    expect(model.listenerCount()).toBe(0);
  });
});
