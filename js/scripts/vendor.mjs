// Copy the pieces a statically exported notebook needs to render widgets with no network:
// require.js, the widget HTML manager (AMD build, with its font assets) and anywidget's AMD
// module. They ship in the wheel under cnnvis_widgets/widgets/static/vendor/.
import { copyFileSync, mkdirSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const mods = join(here, "..", "node_modules");
const out = join(here, "..", "..", "cnnvis_widgets", "widgets", "static", "vendor");
mkdirSync(out, { recursive: true });

copyFileSync(join(mods, "requirejs", "require.js"), join(out, "require.js"));
copyFileSync(join(mods, "anywidget", "dist", "index.js"), join(out, "anywidget.js"));
const hm = join(mods, "@jupyter-widgets", "html-manager", "dist");
copyFileSync(join(hm, "embed-amd.js"), join(out, "embed-amd.js"));
for (const f of readdirSync(hm)) {
  if (/\.(woff2?|ttf|eot|svg)$/.test(f)) copyFileSync(join(hm, f), join(out, f));
}
