import { describe, it, expect } from "vitest";
import { toBytes, sniffImageMime, bytesToBlob, base64ToBytes } from "../src/codecs.js";
import { downsample } from "../src/panels.js";
import { seriesFromTrait } from "../src/view.js";

describe("codecs", () => {
  it("toBytes views DataView, ArrayBuffer, typed arrays and arrays without losing offsets", () => {
    const buf = new Uint8Array([9, 1, 2, 3, 9]).buffer;
    expect([...toBytes(new DataView(buf, 1, 3))]).toEqual([1, 2, 3]);
    expect([...toBytes(buf)]).toEqual([9, 1, 2, 3, 9]);
    expect([...toBytes(new Uint8Array(buf, 2, 2))]).toEqual([2, 3]);
    expect([...toBytes(new Uint16Array([0x0201]))]).toEqual([1, 2]);
    expect([...toBytes([4, 5])]).toEqual([4, 5]);
    expect(toBytes(null).length).toBe(0);
    expect(toBytes(undefined).length).toBe(0);
  });

  it("decodes base64 and data: URLs", () => {
    expect([...base64ToBytes("AQID")]).toEqual([1, 2, 3]);
    expect([...toBytes("data:image/png;base64,AQID")]).toEqual([1, 2, 3]);
    expect(base64ToBytes("not base64!!").length).toBe(0);
  });

  it("sniffs image types from magic numbers", () => {
    expect(sniffImageMime(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10]))).toBe("image/png");
    expect(sniffImageMime(new Uint8Array([0xff, 0xd8, 0xff, 0xe0]))).toBe("image/jpeg");
    expect(sniffImageMime(new Uint8Array([1, 2, 3]), "image/x")).toBe("image/x");
  });

  it("bytesToBlob copies exactly the viewed bytes with the given or sniffed type", async () => {
    const buf = new Uint8Array([0, 0xff, 0xd8, 0xff, 7, 0]).buffer;
    const blob = bytesToBlob(new DataView(buf, 1, 4));
    expect(blob.type).toBe("image/jpeg");
    expect([...new Uint8Array(await blob.arrayBuffer())]).toEqual([0xff, 0xd8, 0xff, 7]);
    expect(bytesToBlob(new Uint8Array([1]), "image/webp").type).toBe("image/webp");
  });
});

describe("chart helpers", () => {
  it("downsample keeps first, last and each bucket's extremes", () => {
    const pts = Array.from({ length: 10000 }, (_, i) => [i, Math.sin(i / 50)]);
    pts[5000] = [5000, 100]; // a spike must survive
    const out = downsample(pts, 400);
    expect(out.length).toBeLessThanOrEqual(402);
    expect(out[0]).toEqual(pts[0]);
    expect(out[out.length - 1]).toEqual(pts[pts.length - 1]);
    expect(out.some((p) => p[1] === 100)).toBe(true);
    for (let i = 1; i < out.length; i++) expect(out[i][0]).toBeGreaterThanOrEqual(out[i - 1][0]);
    expect(downsample(pts.slice(0, 10), 400)).toHaveLength(10);
  });

  it("seriesFromTrait reads lists of numbers or of [x, y] pairs", () => {
    expect(seriesFromTrait([3, 2])).toEqual([
      [0, 3],
      [1, 2],
    ]);
    expect(seriesFromTrait([[5, 1.5]])).toEqual([[5, 1.5]]);
    expect(seriesFromTrait(null)).toEqual([]);
  });
});
