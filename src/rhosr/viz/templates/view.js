// rhosr view: atoms and isosurfaces of densities in 3Dmol.js, from the data in this page.
// State in the URL fragment: #mol=<index>&surface=<density|deformation|error|none>&iso=<value>
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("rhosr-data").textContent);
  var MODES = {};
  DATA.modes.forEach(function (m) { MODES[m.key] = m; });
  var HALF = (function () {  // float16 bit pattern -> value
    var t = new Float32Array(65536);
    for (var h = 0; h < 65536; h++) {
      var s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      t[h] = e === 0 ? s * f * Math.pow(2, -24)
        : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * Math.pow(2, e - 15);
    }
    return t;
  })();
  var state = { mol: 0, mode: "density", iso: {} };
  var viewer = null, shapes = [], volumes = {}, timer = null;
  var el = function (id) { return document.getElementById(id); };

  function fail(err) {
    var text = String(err && err.message || err);
    el("error").textContent = "error: " + text;
    document.body.dataset.state = "error";
    document.body.dataset.error = text;
  }
  window.addEventListener("error", function (e) {
    if (!/ResizeObserver loop/.test(e.message)) fail(e.message);  // that one is benign
  });

  async function decode(b64) {  // base64 of deflated little-endian float16 -> Float32Array
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    var half = new Uint16Array(await new Response(stream).arrayBuffer());
    var out = new Float32Array(half.length);
    for (var j = 0; j < half.length; j++) out[j] = HALF[half[j]];
    return out;
  }

  async function volumesOf(index) {
    if (volumes[index]) return volumes[index];
    var mol = DATA.molecules[index], g = mol.grid, out = {};
    for (var key in mol.fields) {
      var v = new $3Dmol.VolumeData("", "none");
      v.size = { x: g.size[0], y: g.size[1], z: g.size[2] };
      v.unit = { x: g.unit[0], y: g.unit[1], z: g.unit[2] };
      v.origin = { x: g.origin[0], y: g.origin[1], z: g.origin[2] };
      v.matrix = null;
      v.data = await decode(mol.fields[key]);
      out[key] = v;
    }
    volumes[index] = out;
    return out;
  }

  function fmt(x) { return x >= 0.1 ? x.toFixed(2) : x >= 0.01 ? x.toFixed(3) : x.toPrecision(2); }
  function toSlider(mode, x) {
    var r = MODES[mode].range;
    return Math.round(1000 * Math.log(x / r[0]) / Math.log(r[1] / r[0]));
  }
  function fromSlider(mode, s) {
    var r = MODES[mode].range;
    return r[0] * Math.pow(r[1] / r[0], s / 1000);
  }

  function writeHash() {
    var h = "#mol=" + state.mol + "&surface=" + state.mode;
    if (MODES[state.mode].surfaces.length) h += "&iso=" + fmt(state.iso[state.mode]);
    history.replaceState(null, "", h);
  }

  function readHash() {
    var q = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.split("=");
      if (p[0]) q[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
    });
    var m = parseInt(q.mol, 10);
    if (m >= 0 && m < DATA.molecules.length) state.mol = m;
    if (q.surface && MODES[q.surface]) state.mode = q.surface;
    var iso = parseFloat(q.iso);
    if (iso > 0 && MODES[state.mode].surfaces.length) state.iso[state.mode] = iso;
  }

  function titleOf(mol) {
    var t = mol.title + " \u2014 " + MODES[state.mode].title;
    if (mol.nmae_percent !== null) t += " (NMAE " + mol.nmae_percent.toFixed(3) + " % vs reference)";
    return t;
  }

  function updateControls() {
    var mol = DATA.molecules[state.mol], mode = MODES[state.mode];
    Array.prototype.forEach.call(document.querySelectorAll("#modes button"), function (b) {
      b.disabled = b.dataset.mode !== "none" && !(b.dataset.mode in mol.fields);
      b.setAttribute("aria-pressed", String(b.dataset.mode === state.mode));
    });
    var slider = el("iso");
    slider.disabled = !mode.surfaces.length;
    if (mode.surfaces.length) {
      slider.value = toSlider(state.mode, state.iso[state.mode]);
      var iso = fmt(state.iso[state.mode]);
      el("iso-text").textContent = (mode.surfaces.length > 1 ? "\u00b1" : "") + iso + " e/bohr\u00b3";
    } else {
      el("iso-text").textContent = "";
    }
    el("legend").innerHTML = "";
    mode.surfaces.forEach(function (s) {
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = s.color;
      el("legend").appendChild(sw);
      el("legend").appendChild(document.createTextNode(s.name));
    });
    el("title").textContent = titleOf(mol);
    document.title = titleOf(mol);
    el("about").textContent = mol.about;
  }

  async function draw() {
    document.body.dataset.state = "drawing";
    var mol = DATA.molecules[state.mol], mode = MODES[state.mode];
    if (!(state.mode in mol.fields) && state.mode !== "none") state.mode = "density";
    var vols = await volumesOf(state.mol);
    shapes.forEach(function (s) { viewer.removeShape(s); });
    shapes = [];
    mode = MODES[state.mode];
    mode.surfaces.forEach(function (s) {
      shapes.push(viewer.addIsosurface(vols[state.mode], {
        isoval: s.sign * state.iso[state.mode], color: s.color, opacity: mode.opacity, smoothness: 2 }));
    });
    viewer.render();
    updateControls();
    writeHash();
    requestAnimationFrame(function () {
      requestAnimationFrame(function () {
        document.body.dataset.mode = state.mode;
        document.body.dataset.mol = String(state.mol);
        document.body.dataset.state = "drawn";
      });
    });
  }

  function reach(atoms) {  // the farthest atom from the centre of the atoms' box, A
    var lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity], k = ["x", "y", "z"];
    atoms.forEach(function (a) {
      for (var i = 0; i < 3; i++) { lo[i] = Math.min(lo[i], a[k[i]]); hi[i] = Math.max(hi[i], a[k[i]]); }
    });
    var far = 0;
    atoms.forEach(function (a) {
      far = Math.max(far, Math.hypot(a.x - (lo[0] + hi[0]) / 2, a.y - (lo[1] + hi[1]) / 2,
                                     a.z - (lo[2] + hi[2]) / 2));
    });
    return far;
  }

  function showMolecule(index) {
    state.mol = index;
    viewer.clear();
    shapes = [];
    viewer.addModel(DATA.molecules[index].xyz, "xyz");
    viewer.setStyle({}, { stick: { radius: 0.14, colorscheme: "Jmol" },
                          sphere: { scale: 0.25, colorscheme: "Jmol" } });
    viewer.resize();
    viewer.zoomTo();  // fits a sphere of radius max(5 A, r); show about 0.85 r, more for small r
    var r = reach(viewer.selectedAtoms({}));
    viewer.zoom(Math.max(5, r) / Math.max(0.85 * r, 0.5 * r + 1.4));
    var g = DATA.molecules[index].grid;  // no clipping plane through the box
    var box = Math.hypot(g.size[0] * g.unit[0], g.size[1] * g.unit[1], g.size[2] * g.unit[2]);
    viewer.setSlab(-box, box);
    el("molecule").value = String(index);
    return draw();
  }

  function setMode(key) { state.mode = key; draw().catch(fail); }

  function build() {
    DATA.modes.forEach(function (m) {
      state.iso[m.key] = m.default;
      var b = document.createElement("button");
      b.type = "button";
      b.id = "mode-" + m.key;
      b.dataset.mode = m.key;
      b.textContent = m.label;
      b.title = m.title;
      b.addEventListener("click", function () { setMode(m.key); });
      el("modes").appendChild(b);
    });
    DATA.molecules.forEach(function (mol, i) {
      var o = document.createElement("option");
      o.value = String(i);
      o.textContent = mol.title;
      el("molecule").appendChild(o);
    });
    el("molecule-box").hidden = DATA.molecules.length < 2;
    el("molecule").addEventListener("change", function (e) {
      showMolecule(parseInt(e.target.value, 10)).catch(fail);
    });
    el("iso").addEventListener("input", function (e) {
      state.iso[state.mode] = fromSlider(state.mode, parseInt(e.target.value, 10));
      updateControls();
      clearTimeout(timer);
      timer = setTimeout(function () { draw().catch(fail); }, 120);
    });
    readHash();
    viewer = $3Dmol.createViewer(el("viewer"), { backgroundColor: "white", antialias: true });
    return showMolecule(state.mol);
  }

  try {
    build().catch(fail);
  } catch (err) {
    fail(err);
  }
})();
