/* mammogate image viewer: zoom, pan and window/level of the DICOM image in the browser, the
 * model's heatmap and finding marks as layers that can be switched off.
 *
 * Part of mammogate (MIT licence). No dependencies. The page works without it: each
 * <figure data-viewer> holds the server-rendered overlay PNG, which this script replaces with a
 * canvas when the image's pixels can be fetched, and leaves in place (with a note) when not.
 *
 * Pixels come from GET data-pixels: unsigned 16-bit little-endian values, row by row, with
 * X-Image-Rows/Columns, X-Original-Rows/Columns, X-Value-Offset/Scale (modality value =
 * offset + stored x scale), X-Window-Center/Width (modality units) and X-Invert headers.
 * The heatmap (data-heatmap) is an 8-bit grayscale PNG of the whole frame; marks (data-marks)
 * are [column, row, probability] in original pixels.
 *
 * Mouse: wheel zooms at the pointer, drag pans, right-drag or Shift+drag changes the window
 * (left/right: width, up/down: level), double-click resets. Keyboard on the focused image:
 * + and - zoom, arrows pan, H heatmap, M marks, I invert, R reset (also while one of its
 * buttons has the focus).
 */
"use strict";

(function () {
  const MAX_ZOOM = 16;
  const HEAT_OPACITY = 0.45;
  const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

  // the page's language: the study page gives the labels in data-viewer-labels (%s: the value)
  const LABELS = {
    controls: "Viewer controls for %s", zoom_in: "Zoom in", zoom_out: "Zoom out",
    zoom_in_title: "Zoom in (+)", zoom_out_title: "Zoom out (-)", reset: "Reset",
    reset_title: "Reset zoom, pan and window (R)", heatmap: "Heatmap",
    heatmap_title: "Show or hide the heatmap (H)", marks: "Marks",
    marks_title: "Show or hide the finding marks (M)", invert: "Invert",
    invert_title: "Invert the grey scale (I)", level: "L", width: "W",
    image: "%s: mammogram; + and - zoom, arrows pan, H heatmap, M marks, I invert, R reset",
    unavailable: "Zoom and windowing unavailable: %s The picture above is the server's rendering.",
    bad_header: "the server sent no %s.", bad_size: "the pixels are not the size the headers say.",
  };
  const labelled = document.querySelector("[data-viewer-labels]");
  if (labelled) { Object.assign(LABELS, JSON.parse(labelled.dataset.viewerLabels)); }

  function text(key, value) {  // a function as replacement: "$&" in a value stays as it is
    return LABELS[key].replace("%s", () => (value === undefined ? "" : String(value)));
  }

  function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }

  function jet(v) {  // the same map as the server's overlay (imaging/render.py)
    return [clamp(1.5 - Math.abs(4 * v - 3), 0, 1), clamp(1.5 - Math.abs(4 * v - 2), 0, 1),
            clamp(1.5 - Math.abs(4 * v - 1), 0, 1)];
  }

  function number(headers, name) {
    const value = parseFloat(headers.get(name));
    if (!Number.isFinite(value)) { throw new Error(text("bad_header", name)); }
    return value;
  }

  function button(label, title, pressed) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.title = title;
    if (pressed !== undefined) { b.setAttribute("aria-pressed", pressed ? "true" : "false"); }
    return b;
  }

  function numberInput(label, cls) {
    const wrap = document.createElement("label");
    wrap.className = "viewer-number";
    wrap.textContent = label + " ";
    const input = document.createElement("input");
    input.type = "number";
    input.step = "any";
    input.className = cls;
    wrap.appendChild(input);
    return [wrap, input];
  }

  class Viewer {
    constructor(figure) {
      this.figure = figure;
      this.marks = JSON.parse(figure.dataset.marks || "[]");
      this.heatOn = true;
      this.marksOn = true;
      this.zoom = 1;
      this.centre = null;  // image point (reduced grid) at the canvas centre
      this.heatLayer = null;
    }

    async load() {
      const response = await fetch(this.figure.dataset.pixels, { credentials: "same-origin" });
      if (!response.ok) {
        let reason = response.statusText;
        try { reason = (await response.json()).error || reason; } catch (e) { /* not JSON */ }
        throw new Error(reason);
      }
      const h = response.headers;
      this.rows = number(h, "X-Image-Rows");
      this.columns = number(h, "X-Image-Columns");
      this.originalRows = number(h, "X-Original-Rows");
      this.originalColumns = number(h, "X-Original-Columns");
      this.offset = number(h, "X-Value-Offset");
      this.scale = number(h, "X-Value-Scale");
      this.defaultCenter = this.windowCenter = number(h, "X-Window-Center");
      this.defaultWidth = this.windowWidth = number(h, "X-Window-Width");
      this.defaultInvert = this.invert = h.get("X-Invert") === "1";
      const padding = parseInt(h.get("X-Padding-Code"), 10);
      this.paddingCode = Number.isInteger(padding) && padding >= 0 && padding < 65536 ? padding : null;
      // mirrored hanging, back to back: a right breast with its chest wall on the right, a
      // left one on the left (the server says where the image has it; "" when it cannot tell)
      const wall = h.get("X-Chest-Wall");
      const side = { R: "right", L: "left" }[this.figure.dataset.laterality];
      this.flip = Boolean(wall && side && wall !== side);
      const bytes = await response.arrayBuffer();
      if (bytes.byteLength !== this.rows * this.columns * 2) {
        throw new Error(text("bad_size"));
      }
      this.values = LITTLE_ENDIAN ? new Uint16Array(bytes) : this.swapped(bytes);
      if (this.figure.dataset.heatmap) { await this.loadHeatmap(this.figure.dataset.heatmap); }
      this.build();
      this.updateBase();
      this.draw();
    }

    swapped(bytes) {
      const view = new DataView(bytes);
      const out = new Uint16Array(bytes.byteLength / 2);
      for (let i = 0; i < out.length; i++) { out[i] = view.getUint16(2 * i, true); }
      return out;
    }

    async loadHeatmap(url) {
      const picture = new Image();
      picture.src = url;
      try { await picture.decode(); } catch (e) { return; }  // no layer; the image still shows
      const layer = document.createElement("canvas");
      layer.width = picture.naturalWidth;
      layer.height = picture.naturalHeight;
      const ctx = layer.getContext("2d");
      ctx.drawImage(picture, 0, 0);
      const data = ctx.getImageData(0, 0, layer.width, layer.height);
      const px = data.data;
      for (let i = 0; i < px.length; i += 4) {
        const v = px[i] / 255;
        const [r, g, b] = jet(v);
        px[i] = r * 255; px[i + 1] = g * 255; px[i + 2] = b * 255;
        px[i + 3] = 255 * HEAT_OPACITY * clamp(2 * v, 0, 1);
      }
      ctx.putImageData(data, 0, 0);
      this.heatLayer = layer;
    }

    build() {
      const f = this.figure;
      const label = f.dataset.label || "image";
      const bar = document.createElement("div");
      bar.className = "viewer-tools";
      bar.setAttribute("role", "toolbar");
      bar.setAttribute("aria-label", text("controls", label));
      const zoomIn = button("+", text("zoom_in_title"));
      const zoomOut = button("−", text("zoom_out_title"));
      const reset = button(text("reset"), text("reset_title"));
      this.heatButton = button(text("heatmap"), text("heatmap_title"), this.heatOn);
      this.marksButton = button(text("marks"), text("marks_title"), this.marksOn);
      this.invertButton = button(text("invert"), text("invert_title"), false);
      zoomIn.setAttribute("aria-label", text("zoom_in"));
      zoomOut.setAttribute("aria-label", text("zoom_out"));
      zoomIn.classList.add("zoom-in");
      zoomOut.classList.add("zoom-out");
      reset.classList.add("reset");
      this.heatButton.classList.add("toggle-heatmap");
      this.marksButton.classList.add("toggle-marks");
      this.invertButton.classList.add("toggle-invert");
      if (!this.heatLayer) { this.heatButton.disabled = true; this.heatOn = false; }
      if (!this.marks.length) { this.marksButton.disabled = true; }
      const [levelLabel, level] = numberInput(text("level"), "window-center");
      const [widthLabel, width] = numberInput(text("width"), "window-width");
      this.levelInput = level;
      this.widthInput = width;
      bar.append(zoomIn, zoomOut, reset, this.heatButton, this.marksButton, this.invertButton,
                 levelLabel, widthLabel);

      const canvas = document.createElement("canvas");
      canvas.className = "viewer-canvas";
      canvas.tabIndex = 0;
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", text("image", label));
      this.canvas = canvas;
      this.base = document.createElement("canvas");
      this.base.width = this.columns;
      this.base.height = this.rows;

      const fallback = f.querySelector("img");
      if (fallback) { fallback.hidden = true; }
      f.insertBefore(bar, f.firstChild);
      f.insertBefore(canvas, bar.nextSibling);
      f.dataset.viewer = "ready";

      zoomIn.addEventListener("click", () => this.zoomBy(2));
      zoomOut.addEventListener("click", () => this.zoomBy(0.5));
      reset.addEventListener("click", () => this.reset());
      this.heatButton.addEventListener("click", () => this.toggle("heat"));
      this.marksButton.addEventListener("click", () => this.toggle("marks"));
      this.invertButton.addEventListener("click", () => this.toggle("invert"));
      const onWindowInput = () => {
        const c = parseFloat(level.value);
        const w = parseFloat(width.value);
        if (Number.isFinite(c) && Number.isFinite(w) && w > 0) { this.setWindow(c, w); }
      };
      level.addEventListener("change", onWindowInput);
      width.addEventListener("change", onWindowInput);
      // keys act while the image or one of its buttons has the focus (not in the L and W boxes)
      f.addEventListener("keydown", (e) => { if (e.target.tagName !== "INPUT") { this.onKey(e); } });
      canvas.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
      canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
      canvas.addEventListener("dblclick", () => this.reset());
      canvas.addEventListener("contextmenu", (e) => e.preventDefault());
      new ResizeObserver(() => this.draw()).observe(canvas);
    }

    updateBase() {
      // a lookup table from stored value to grey: one pass per window change
      const lut = new Uint8ClampedArray(65536);
      const low = this.windowCenter - this.windowWidth / 2;
      for (let s = 0; s < 65536; s++) {
        let g = (this.offset + s * this.scale - low) / this.windowWidth;
        g = clamp(g, 0, 1);
        lut[s] = 255 * (this.invert ? 1 - g : g);
      }
      if (this.paddingCode !== null) { lut[this.paddingCode] = 0; }  // padding: black, any window
      const ctx = this.base.getContext("2d");
      const data = ctx.createImageData(this.columns, this.rows);
      const px = data.data;
      const values = this.values;
      for (let i = 0, j = 0; i < values.length; i++, j += 4) {
        const g = lut[values[i]];
        px[j] = g; px[j + 1] = g; px[j + 2] = g; px[j + 3] = 255;
      }
      ctx.putImageData(data, 0, 0);
      this.levelInput.value = Math.round(this.windowCenter * 100) / 100;
      this.widthInput.value = Math.round(this.windowWidth * 100) / 100;
      const d = this.figure.dataset;
      d.windowCenter = String(this.windowCenter);
      d.windowWidth = String(this.windowWidth);
      d.invert = this.invert ? "on" : "off";
    }

    fitScale() {
      return Math.min(this.canvas.width / this.columns, this.canvas.height / this.rows);
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const cssWidth = canvas.clientWidth || 300;
      canvas.width = Math.round(cssWidth * ratio);
      canvas.height = Math.round(cssWidth * ratio * this.rows / this.columns);
      if (!this.centre) { this.centre = [this.columns / 2, this.rows / 2]; }
      const s = this.fitScale() * this.zoom;
      const ctx = canvas.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.setTransform(s, 0, 0, s, canvas.width / 2 - this.centre[0] * s, canvas.height / 2 - this.centre[1] * s);
      if (this.flip) { ctx.transform(-1, 0, 0, 1, this.columns, 0); }
      ctx.imageSmoothingEnabled = this.zoom < 4;  // pixels stay pixels up close
      ctx.drawImage(this.base, 0, 0);
      if (this.heatOn && this.heatLayer) {
        ctx.imageSmoothingEnabled = true;
        ctx.drawImage(this.heatLayer, 0, 0, this.columns, this.rows);
      }
      if (this.marksOn) {
        const kx = this.columns / this.originalColumns;
        const ky = this.rows / this.originalRows;
        ctx.strokeStyle = "#ffff00";
        ctx.lineWidth = 2 / s;
        const radius = Math.max(6 / s, this.rows * 0.03);
        for (const [column, row] of this.marks) {
          ctx.beginPath();
          ctx.arc(column * kx, row * ky, radius, 0, 2 * Math.PI);
          ctx.stroke();
        }
      }
      const d = this.figure.dataset;
      d.zoom = String(this.zoom);
      d.heatmap = this.heatOn ? "on" : "off";
      d.marks = this.marksOn ? "on" : "off";
      d.flipped = this.flip ? "yes" : "no";
    }

    zoomBy(factor, anchor) {
      const zoom = clamp(this.zoom * factor, 1, MAX_ZOOM);
      if (anchor) {  // keep the image point under the pointer where it is
        const s0 = this.fitScale() * this.zoom;
        const s1 = this.fitScale() * zoom;
        const [cx, cy] = this.centre;
        const px = cx + (anchor[0] - this.canvas.width / 2) / s0;
        const py = cy + (anchor[1] - this.canvas.height / 2) / s0;
        this.centre = [px - (anchor[0] - this.canvas.width / 2) / s1, py - (anchor[1] - this.canvas.height / 2) / s1];
      }
      this.zoom = zoom;
      if (zoom === 1) { this.centre = null; }
      this.draw();
    }

    panBy(dx, dy) {  // in canvas pixels
      const s = this.fitScale() * this.zoom;
      const [cx, cy] = this.centre;
      this.centre = [clamp(cx - dx / s, 0, this.columns), clamp(cy - dy / s, 0, this.rows)];
      this.draw();
    }

    setWindow(center, width) {
      this.windowCenter = center;
      this.windowWidth = Math.max(width, 1e-6);
      this.updateBase();
      this.draw();
    }

    toggle(what) {
      if (what === "heat") {
        this.heatOn = !this.heatOn;
        this.heatButton.setAttribute("aria-pressed", String(this.heatOn));
      } else if (what === "marks") {
        this.marksOn = !this.marksOn;
        this.marksButton.setAttribute("aria-pressed", String(this.marksOn));
      } else {
        this.invert = !this.invert;
        this.invertButton.setAttribute("aria-pressed", String(this.invert !== this.defaultInvert));
        this.updateBase();
      }
      this.draw();
    }

    reset() {
      this.zoom = 1;
      this.centre = null;
      this.invert = this.defaultInvert;
      this.invertButton.setAttribute("aria-pressed", "false");
      this.setWindow(this.defaultCenter, this.defaultWidth);
    }

    onKey(e) {
      const step = 40 * (window.devicePixelRatio || 1);
      const actions = {
        "+": () => this.zoomBy(2), "=": () => this.zoomBy(2), "-": () => this.zoomBy(0.5),
        ArrowLeft: () => this.panBy(step, 0), ArrowRight: () => this.panBy(-step, 0),
        ArrowUp: () => this.panBy(0, step), ArrowDown: () => this.panBy(0, -step),
        h: () => this.toggle("heat"), m: () => this.toggle("marks"), i: () => this.toggle("invert"),
        r: () => this.reset(), 0: () => this.reset(),
      };
      const action = actions[e.key.length === 1 ? e.key.toLowerCase() : e.key];
      if (action && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        action();
      }
    }

    canvasPoint(e) {
      const rect = this.canvas.getBoundingClientRect();
      return [(e.clientX - rect.left) * this.canvas.width / rect.width,
              (e.clientY - rect.top) * this.canvas.height / rect.height];
    }

    onWheel(e) {
      e.preventDefault();
      this.zoomBy(e.deltaY < 0 ? 1.25 : 0.8, this.canvasPoint(e));
    }

    onPointerDown(e) {
      const windowing = e.button === 2 || e.shiftKey;
      if (e.button !== 0 && !windowing) { return; }
      e.preventDefault();
      this.canvas.setPointerCapture(e.pointerId);
      this.canvas.focus();
      let [lastX, lastY] = this.canvasPoint(e);
      const move = (m) => {
        const [x, y] = this.canvasPoint(m);
        const dx = x - lastX;
        const dy = y - lastY;
        lastX = x; lastY = y;
        if (windowing) {
          const k = this.defaultWidth / this.canvas.width;  // the canvas' width spans one default window
          this.setWindow(this.windowCenter - dy * k, this.windowWidth + dx * k);
        } else {
          this.panBy(dx, dy);
        }
      };
      const up = () => {
        this.canvas.removeEventListener("pointermove", move);
        this.canvas.removeEventListener("pointerup", up);
        this.canvas.removeEventListener("pointercancel", up);
      };
      this.canvas.addEventListener("pointermove", move);
      this.canvas.addEventListener("pointerup", up);
      this.canvas.addEventListener("pointercancel", up);
    }
  }

  function start() {
    for (const figure of document.querySelectorAll("figure[data-viewer][data-pixels]")) {
      const viewer = new Viewer(figure);
      viewer.load().catch((error) => {
        figure.dataset.viewer = "unavailable";
        const note = document.createElement("p");
        note.className = "note viewer-unavailable";
        note.textContent = text("unavailable", error.message);
        figure.appendChild(note);
      });
    }
    for (const help of document.querySelectorAll(".viewer-help")) { help.hidden = false; }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
