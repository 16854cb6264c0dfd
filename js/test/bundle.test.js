// @vitest-environment node
// The shipped bundle: built in memory with the same options as `npm run build`, then checked for
// anything that could reach the network or run strings as code.
import { describe, it, expect } from "vitest";
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const entry = fileURLToPath(new URL("../src/index.js", import.meta.url));

async function bundle() {
  const out = await build({ entryPoints: [entry], bundle: true, format: "esm", target: "es2020", write: false, outfile: "widget.js", logLevel: "silent" });
  const js = out.outputFiles.find((f) => f.path.endsWith(".js")).text;
  const css = out.outputFiles.find((f) => f.path.endsWith(".css")).text;
  return { js, css };
}

describe("bundle", () => {
  it("has no URLs, network calls, eval or innerHTML, and stays small", async () => {
    const { js, css } = await bundle();
    for (const text of [js, css]) {
      expect(text).not.toMatch(/https?:\/\//);
      expect(text).not.toMatch(/@import|url\(/);
    }
    expect(js).not.toMatch(/\bfetch\s*\(|XMLHttpRequest|WebSocket|\beval\s*\(|new Function|innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    expect(js).toMatch(/export\s*\{[^}]*default/);
    expect(js.length).toBeLessThan(80_000);
    expect(css).toMatch(/\.cv-root/);
    // every class selector is prefixed cv-
    const rules = css.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\{[^{}]*\}/g, "{}"); // selectors only
    const classes = [...rules.matchAll(/\.([a-zA-Z_][\w-]*)/g)].map((m) => m[1]);
    expect(classes.length).toBeGreaterThan(10);
    expect(classes.filter((c) => !c.startsWith("cv-"))).toEqual([]);
  });
});
