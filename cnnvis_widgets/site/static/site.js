/* The static atlas's search (cnnvis_widgets.site). No network: the data is the global
 * CNNVIS_ATLAS_INDEX that search-index.js assigns (a <script src>, since browsers refuse fetch()
 * of file:// URLs). Results are built with createElement/textContent only: a label such as
 * "<script>" shows as text. */
(function () {
  "use strict";

  var MAX_RESULTS = 300;

  function norm(s) {
    return String(s == null ? "" : s).toLowerCase().trim();
  }

  function fmt(x) {
    return typeof x === "number" ? String(Number(x.toPrecision(3))) : "n/a";
  }

  /* Every match of query q: {unit, kind: "concept"|"class", text, value, weak}, best first:
   * concept labels before best matches below the IoU threshold (weak), then exact matches,
   * then the higher IoU / weight. */
  function search(index, q, by) {
    var query = norm(q);
    var hits = [];
    if (!query) return hits;
    index.units.forEach(function (u) {
      if (by !== "class" && u.concept && norm(u.concept).indexOf(query) >= 0) {
        hits.push({ unit: u, kind: "concept", text: u.concept, value: u.iou, weak: !u.interpretable });
      }
      if (by !== "concept") {
        (u.classes || []).forEach(function (cw) {
          if (norm(cw[0]).indexOf(query) >= 0) {
            hits.push({ unit: u, kind: "class", text: cw[0], value: cw[1], weak: false });
          }
        });
      }
    });
    hits.sort(function (a, b) {
      if (a.weak !== b.weak) return a.weak ? 1 : -1;
      var ea = norm(a.text) === query ? 0 : 1;
      var eb = norm(b.text) === query ? 0 : 1;
      if (ea !== eb) return ea - eb;
      return (b.value || 0) - (a.value || 0);
    });
    return hits;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  function result(hit) {
    var u = hit.unit;
    var li = el("li");
    var a = el("a");
    a.href = u.href;
    if (u.image) {
      var img = el("img", "am");
      img.src = u.image;
      img.alt = "";
      img.loading = "lazy";
      a.appendChild(img);
    }
    a.appendChild(el("span", "unit-no", "unit " + u.unit + " of layer " + u.layer));
    var why;
    if (hit.kind === "class") {
      why = "feeds class: " + hit.text + " (weight " + fmt(hit.value) + ")";
    } else if (hit.weak) {
      why = "best match, below the IoU threshold: " + hit.text + " (IoU " + fmt(hit.value) + ")";
    } else {
      why = "concept: " + hit.text + " (IoU " + fmt(hit.value) + ")";
    }
    a.appendChild(el("span", "why", why));
    li.appendChild(a);
    return li;
  }

  function start() {
    var form = document.getElementById("atlas-search");
    if (!form) return;
    var input = document.getElementById("q");
    var by = document.getElementById("by");
    var list = document.getElementById("results");
    var status = document.getElementById("results-status");
    var index = window.CNNVIS_ATLAS_INDEX;
    if (!index || !index.units) {
      status.textContent = "The search index (search-index.js) did not load.";
      return;
    }

    function run() {
      var q = input.value;
      var hits = search(index, q, by.value);
      while (list.firstChild) list.removeChild(list.firstChild);
      hits.slice(0, MAX_RESULTS).forEach(function (h) {
        list.appendChild(result(h));
      });
      if (!norm(q)) {
        status.textContent = "Type a concept or a class name.";
      } else if (!hits.length) {
        status.textContent = "No unit matches \u201c" + q + "\u201d.";
      } else {
        status.textContent = hits.length + (hits.length === 1 ? " match" : " matches") +
          " for \u201c" + q + "\u201d" +
          (hits.length > MAX_RESULTS ? " (the first " + MAX_RESULTS + " shown)" : "") + ".";
      }
    }

    var params = new URLSearchParams(window.location.search);
    if (params.get("q") !== null) input.value = params.get("q");
    var mode = params.get("by");
    if (mode === "concept" || mode === "class" || mode === "any") by.value = mode;
    input.addEventListener("input", run);
    by.addEventListener("change", run);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      run();
    });
    run();
  }

  window.cnnvisAtlasSearch = search;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
