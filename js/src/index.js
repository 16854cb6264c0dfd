// cnnvis_widgets front end: one anywidget module shared by every widget. What to draw comes
// from the `controls` and `panels` traits (js/PROTOCOL.md); nothing is fetched from the network.

import "./style.css";
import { View } from "./view.js";

/** Once per model. All state lives in the views (each view works on its own), so there is
 * nothing to register here; the returned cleanup runs when the model is destroyed. */
function initialize({ model }) {
  void model;
  return () => {};
}

/** Once per view: builds the DOM into `el`; the returned cleanup removes every listener,
 * timer and object URL of this view. */
function render({ model, el }) {
  const view = new View(model, el);
  return () => view.dispose();
}

export default { initialize, render };
export { View };
