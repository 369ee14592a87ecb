/* Annotation workspace: a canvas box editor for full-resolution photos (no build step).
 *
 * Mouse: drag on the photo to draw; drag a box to move it; drag a handle to resize;
 *        W or Shift+drag draws over existing boxes; wheel zooms around the cursor;
 *        space+drag or middle button pans.
 * Keys:  1-9 sub-class, Shift+1-9 meta-class (unsure), L search labels, Del delete,
 *        arrows nudge (Shift x10), Tab next box, Esc deselect, F fit, H hide boxes,
 *        D / T difficult / truncated flag of the box, Ctrl+D duplicate the box,
 *        Ctrl+Z undo, Ctrl+Y / Ctrl+Shift+Z redo, Ctrl+S save, Ctrl+Enter submit (or accept),
 *        N / P next / previous photo of the queue (saves a changed draft first),
 *        O other annotators' boxes (review / adjudication).
 * Boxes are kept in original-photo pixels; the server stores them as integers.
 */
(function () {
  "use strict";
  const cfgEl = document.getElementById("ws-config");
  if (!cfgEl) return;
  const cfg = JSON.parse(cfgEl.textContent);
  const $ = (sel) => document.querySelector(sel);
  const canvas = $("#ws-canvas");
  const stage = $("#ws-stage");
  const ctx = canvas.getContext("2d");
  const csrf = () => (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";

  const subs = cfg.labels.filter((l) => l.level === "sub");
  const metas = cfg.labels.filter((l) => l.level === "meta");
  const byCode = Object.fromEntries(cfg.labels.map((l) => [l.code, l]));
  const palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324"];
  const labelColour = Object.fromEntries(cfg.labels.map((l, i) => [l.code, palette[i % palette.length]]));
  const colourOf = (code) => labelColour[code] || "#ffd400";  // one colour per label, as in CVAT

  const S = {
    data: null, img: null, boxes: [], sel: -1, label: subs.length ? subs[0].code : (metas[0] || {}).code,
    scale: 1, ox: 0, oy: 0, undo: [], redo: [], dirty: false, drag: null, space: false, hide: false,
    queue: [], qIndex: -1, mouse: null, busy: false, showOthers: false, forceDraw: false,
  };

  // ------------------------------------------------------------------ helpers
  const toImg = (sx, sy) => [(sx - S.ox) / S.scale, (sy - S.oy) / S.scale];
  const toScr = (ix, iy) => [ix * S.scale + S.ox, iy * S.scale + S.oy];
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  const px = (v) => String(Math.round(v * 100) / 100);  // for display: at most 2 decimals ("10", "10.25")
  const W = () => (S.data ? S.data.photo.width : 1);
  const H = () => (S.data ? S.data.photo.height : 1);
  const editable = () => !!(S.data && S.data.editable);
  function status(msg, kind) { const el = $("#ws-status"); el.textContent = msg; el.className = "ws-status " + (kind || ""); }
  function snapshot() { S.undo.push(JSON.stringify(S.boxes)); if (S.undo.length > 200) S.undo.shift(); S.redo = []; }
  function changed() { S.dirty = true; S.rev = (S.rev || 0) + 1; renderList(); draw(); status("Unsaved changes", "warn"); document.dispatchEvent(new Event("ws:changed")); }
  function normal(b) {
    const x0 = Math.min(b.x0, b.x1), x1 = Math.max(b.x0, b.x1), y0 = Math.min(b.y0, b.y1), y1 = Math.max(b.y0, b.y1);
    b.x0 = clamp(x0, 0, W()); b.x1 = clamp(x1, 0, W()); b.y0 = clamp(y0, 0, H()); b.y1 = clamp(y1, 0, H());
    return b;
  }
  function labelName(code) { const l = byCode[code]; if (!l) return code + " (unknown)"; return l.level === "meta" ? l.name + " (meta, unsure)" : l.name; }

  // ------------------------------------------------------------------ view
  function resize() {
    const r = stage.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(50, r.width) * dpr; canvas.height = Math.max(50, r.height) * dpr;
    canvas.style.width = r.width + "px"; canvas.style.height = r.height + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    draw();
  }
  function fit() {
    const r = stage.getBoundingClientRect();
    S.scale = Math.min(r.width / W(), r.height / H()) * 0.98;
    S.ox = (r.width - W() * S.scale) / 2; S.oy = (r.height - H() * S.scale) / 2;
    draw();
  }
  function zoomAt(sx, sy, factor) {
    const [ix, iy] = toImg(sx, sy);
    S.scale = clamp(S.scale * factor, 0.02, 40);
    S.ox = sx - ix * S.scale; S.oy = sy - iy * S.scale;
    draw();
  }
  function handles(b) {
    const [x0, y0] = toScr(b.x0, b.y0), [x1, y1] = toScr(b.x1, b.y1), mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
    return { nw: [x0, y0], n: [mx, y0], ne: [x1, y0], e: [x1, my], se: [x1, y1], s: [mx, y1], sw: [x0, y1], w: [x0, my] };
  }

  function draw() {
    const r = stage.getBoundingClientRect();
    ctx.clearRect(0, 0, r.width, r.height);
    ctx.fillStyle = "#1b1f24"; ctx.fillRect(0, 0, r.width, r.height);
    if (!S.img) return;
    ctx.imageSmoothingEnabled = S.scale < 2;
    ctx.drawImage(S.img, S.ox, S.oy, W() * S.scale, H() * S.scale);
    if (S.hide) return;
    if (S.showOthers) (S.data.others || []).forEach((o, k) => o.boxes.forEach((b) => {
      const [x0, y0] = toScr(b.x0, b.y0), [x1, y1] = toScr(b.x1, b.y1);
      ctx.lineWidth = 2; ctx.strokeStyle = o.is_gold ? "#ffd700" : "#ffffff"; ctx.setLineDash([3, 4]);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0); ctx.setLineDash([]);
      ctx.font = "12px system-ui, sans-serif"; ctx.fillStyle = "rgba(0,0,0,.6)";
      const t = `${o.annotator}${o.is_gold ? " (gold)" : ""}: ${b.label}`; const tw = ctx.measureText(t).width + 6;
      ctx.fillRect(x0, y1, tw, 16); ctx.fillStyle = "#fff"; ctx.fillText(t, x0 + 3, y1 + 12);
    }));
    const layout = { labels: [], pins: [] }, labelEnd = {};
    S.boxes.forEach((b, i) => {
      const [x0, y0] = toScr(b.x0, b.y0), [x1, y1] = toScr(b.x1, b.y1);
      const col = colourOf(b.label), sel = i === S.sel;
      const meta = (byCode[b.label] || {}).level === "meta";
      ctx.lineWidth = sel ? 3 : 2; ctx.strokeStyle = col;
      ctx.setLineDash(meta ? [8, 5] : []);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.setLineDash([]);
      if (sel) { ctx.fillStyle = "rgba(255,255,255,0.10)"; ctx.fillRect(x0, y0, x1 - x0, y1 - y0); }
      const text = `${i + 1} ${b.label}${meta ? "?" : ""}`;
      ctx.font = "600 13px system-ui, sans-serif";
      const tw = ctx.measureText(text).width + 8;
      ctx.fillStyle = col; ctx.fillRect(x0, Math.max(0, y0 - 18), tw, 18);
      layout.labels.push([x0, Math.max(0, y0 - 18), x0 + tw, Math.max(0, y0 - 18) + 18]); labelEnd[i] = x0 + tw;
      ctx.fillStyle = "#000"; ctx.fillText(text, x0 + 4, Math.max(0, y0 - 18) + 13);
      if (sel && editable()) {
        ctx.fillStyle = "#fff"; ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
        Object.values(handles(b)).forEach(([hx, hy]) => { ctx.fillRect(hx - 4, hy - 4, 8, 8); ctx.strokeRect(hx - 4, hy - 4, 8, 8); }); }
    });
    (S.overlays || []).forEach((fn) => fn(ctx, toScr));  // e.g. the model's proposed box (workspace_proposal.js)
    const comments = (S.data.annotation && S.data.annotation.comments) || [];
    comments.forEach((c, i) => {
      if (c.x == null) return;
      const j = S.boxes.findIndex((bb) => bb.id && bb.id === c.box), b = S.boxes[j];
      // a pinned comment sits right of the box's label (and of the box's top-right corner), never over the label
      let px, py;
      if (b) { const [bx1, by0] = toScr(b.x1, b.y0); px = Math.max(bx1, labelEnd[j] || bx1) + 12; py = Math.max(10, by0 - 9); }
      else { [px, py] = toScr(c.x, c.y); py -= 16; }
      ctx.fillStyle = c.resolved ? "#8a96a3" : "#ffcc00"; ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(px, py, 10, 0, Math.PI * 2); ctx.fill(); ctx.stroke();
      ctx.fillStyle = "#000"; ctx.font = "700 12px system-ui"; ctx.fillText(String(i + 1), px - 4, py + 4);
      layout.pins.push([px - 10, py - 10, px + 10, py + 10]);
    });
    canvas.dataset.layout = JSON.stringify(layout);  // label and pin rectangles on screen (read by the browser tests)
    if (S.drag && S.drag.kind === "draw") {
      const d = S.drag.box; const [x0, y0] = toScr(d.x0, d.y0), [x1, y1] = toScr(d.x1, d.y1);
      ctx.strokeStyle = colourOf(S.label); ctx.lineWidth = 2; ctx.setLineDash([4, 3]);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0); ctx.setLineDash([]);
    }
    if (S.mouse && !S.drag && editable() && !S.space) { // crosshair guides, as in labelImg
      ctx.strokeStyle = "rgba(255,255,255,.35)"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(S.mouse[0], 0); ctx.lineTo(S.mouse[0], r.height); ctx.moveTo(0, S.mouse[1]); ctx.lineTo(r.width, S.mouse[1]); ctx.stroke();
    }
  }

  // ------------------------------------------------------------------ hit testing
  function hit(sx, sy) {
    if (S.sel >= 0 && editable()) {
      const hs = handles(S.boxes[S.sel]);
      for (const [k, [hx, hy]] of Object.entries(hs)) if (Math.abs(sx - hx) <= 7 && Math.abs(sy - hy) <= 7) return { i: S.sel, handle: k };
    }
    const [ix, iy] = toImg(sx, sy);
    let best = -1, bestArea = Infinity; // smallest box under the cursor wins (nested lesions)
    S.boxes.forEach((b, i) => {
      if (ix >= b.x0 && ix <= b.x1 && iy >= b.y0 && iy <= b.y1) { const a = (b.x1 - b.x0) * (b.y1 - b.y0); if (a < bestArea) { best = i; bestArea = a; } }
    });
    return best >= 0 ? { i: best, handle: null } : null;
  }

  // ------------------------------------------------------------------ mouse
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousedown", (e) => { if (e.button === 1) e.preventDefault(); }); // no auto-scroll on middle-drag
  canvas.addEventListener("pointerdown", (e) => {  // pointer events: mouse, pen and touch
    canvas.focus();
    const sx = e.offsetX, sy = e.offsetY;
    if (e.button === 1 || (e.button === 0 && S.space)) { S.drag = { kind: "pan", sx, sy, ox: S.ox, oy: S.oy }; e.preventDefault(); return; }
    if (e.button !== 0 || !S.img) return;
    const h = (S.forceDraw || e.shiftKey) && editable() ? null : hit(sx, sy);  // W or Shift: draw over boxes
    S.forceDraw = false; canvas.classList.remove("drawing");
    if (h) {
      S.sel = h.i; renderList(); draw();
      if (!editable()) return;
      snapshot();
      S.drag = { kind: h.handle ? "resize" : "move", handle: h.handle, start: toImg(sx, sy), orig: { ...S.boxes[h.i] }, moved: false };
      return;
    }
    if (!editable()) { S.sel = -1; renderList(); draw(); return; }
    const [ix, iy] = toImg(sx, sy).map(Math.round);  // the editor draws whole pixels
    if (ix < 0 || iy < 0 || ix > W() || iy > H()) return;
    S.drag = { kind: "draw", box: { x0: ix, y0: iy, x1: ix, y1: iy } };
  });
  window.addEventListener("pointermove", (e) => {
    const r = canvas.getBoundingClientRect();
    const sx = e.clientX - r.left, sy = e.clientY - r.top;
    S.mouse = sx >= 0 && sy >= 0 && sx <= r.width && sy <= r.height ? [sx, sy] : null;
    if (S.mouse && S.img) { const [ix, iy] = toImg(sx, sy); $("#ws-cursor").textContent = `${Math.round(ix)}, ${Math.round(iy)} px · ${Math.round(S.scale * 100)} %`; }
    const d = S.drag;
    if (!d) { if (S.mouse) draw(); return; }
    if (d.kind === "pan") { S.ox = d.ox + sx - d.sx; S.oy = d.oy + sy - d.sy; draw(); return; }
    const [ix, iy] = toImg(sx, sy);
    if (d.kind === "draw") { d.box.x1 = clamp(Math.round(ix), 0, W()); d.box.y1 = clamp(Math.round(iy), 0, H()); draw(); return; }
    // whole-pixel steps: an edge the annotator does not touch keeps its sub-pixel value
    const b = S.boxes[S.sel], o = d.orig, dx = Math.round(ix - d.start[0]), dy = Math.round(iy - d.start[1]);
    d.moved = true;
    if (d.kind === "move") {
      const w = o.x1 - o.x0, h = o.y1 - o.y0;
      b.x0 = clamp(o.x0 + dx, 0, W() - w); b.y0 = clamp(o.y0 + dy, 0, H() - h); b.x1 = b.x0 + w; b.y1 = b.y0 + h;
    } else {
      const hd = d.handle;
      if (hd.includes("w")) b.x0 = clamp(o.x0 + dx, 0, W());
      if (hd.includes("e")) b.x1 = clamp(o.x1 + dx, 0, W());
      if (hd.includes("n")) b.y0 = clamp(o.y0 + dy, 0, H());
      if (hd.includes("s")) b.y1 = clamp(o.y1 + dy, 0, H());
    }
    draw();
  });
  window.addEventListener("pointerup", () => {
    const d = S.drag; S.drag = null;
    if (!d) return;
    if (d.kind === "draw") {
      const b = normal({ ...d.box });
      if ((b.x1 - b.x0) * S.scale >= 4 && (b.y1 - b.y0) * S.scale >= 4 && b.x1 - b.x0 >= 1 && b.y1 - b.y0 >= 1) {
        snapshot();
        S.boxes.push({ id: null, x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1, label: S.label, difficult: false, truncated: false });
        S.sel = S.boxes.length - 1; changed();
      } else { draw(); }
    } else if (d.kind === "move" || d.kind === "resize") {
      if (d.moved) { normal(S.boxes[S.sel]); changed(); } else { S.undo.pop(); }
    }
  });
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); zoomAt(e.offsetX, e.offsetY, e.deltaY < 0 ? 1.15 : 1 / 1.15); }, { passive: false });

  // ------------------------------------------------------------------ keyboard
  function typing(e) { const t = e.target; return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT"); }
  window.addEventListener("keydown", (e) => {
    const k = e.key, mod = e.ctrlKey || e.metaKey;
    if (mod && (k === "s" || k === "S")) { e.preventDefault(); save(false); return; }
    if (mod && k === "Enter") { e.preventDefault(); cfg.mode === "review" ? decide("accept") : save(true); return; }
    if (typing(e)) { if (k === "Escape") e.target.blur(); return; }
    if (mod && (k === "z" || k === "Z") && !e.shiftKey) { e.preventDefault(); undo(); return; }
    if (mod && (k === "y" || ((k === "z" || k === "Z") && e.shiftKey))) { e.preventDefault(); redo(); return; }
    if (mod && (k === "d" || k === "D") && S.sel >= 0 && editable()) { // duplicate (CVAT's copy/paste)
      e.preventDefault(); snapshot();
      const b = S.boxes[S.sel], w = b.x1 - b.x0, h = b.y1 - b.y0;
      const step = Math.max(1, Math.round(10 / S.scale));
      const x0 = clamp(b.x0 + step, 0, W() - w), y0 = clamp(b.y0 + step, 0, H() - h);
      S.boxes.push({ ...b, id: null, x0, y0, x1: x0 + w, y1: y0 + h }); S.sel = S.boxes.length - 1; changed(); return;
    }
    if (mod) return;
    if (k === " ") { S.space = true; canvas.style.cursor = "grab"; e.preventDefault(); return; }
    const digit = /^Digit([1-9])$/.exec(e.code);
    if (digit) { const list = e.shiftKey ? metas : subs; const l = list[+digit[1] - 1]; if (l) setLabel(l.code); e.preventDefault(); return; }
    if (k === "Delete" || k === "Backspace") { deleteSel(); e.preventDefault(); return; }
    if (k === "n" || k === "N") { go(1); return; }
    if (k === "p" || k === "P") { go(-1); return; }
    if (k === "f" || k === "F") { fit(); return; }
    if (k === "h" || k === "H") { S.hide = !S.hide; draw(); return; }
    if (k === "w" || k === "W") { S.forceDraw = editable(); canvas.classList.toggle("drawing", S.forceDraw); status(S.forceDraw ? "Draw a box (even over other boxes)" : "", ""); return; }
    if (k === "o" || k === "O") { toggleOthers(!S.showOthers); return; }
    if ((k === "d" || k === "t") && S.sel >= 0 && editable()) { // labelImg's "difficult" flag; truncated at the photo edge
      snapshot(); const f = k === "d" ? "difficult" : "truncated"; S.boxes[S.sel][f] = !S.boxes[S.sel][f]; changed(); return;
    }
    if (k === "l" || k === "L") { $("#ws-label-search").focus(); e.preventDefault(); return; }
    if (k === "Escape") { S.drag = null; S.sel = -1; renderList(); draw(); return; }
    if (k === "Tab" && S.boxes.length) { S.sel = (S.sel + (e.shiftKey ? -1 + S.boxes.length : 1)) % S.boxes.length; renderList(); draw(); e.preventDefault(); return; }
    if (k.startsWith("Arrow") && S.sel >= 0 && editable()) {
      const step = e.shiftKey ? 10 : 1, b = S.boxes[S.sel], w = b.x1 - b.x0, h = b.y1 - b.y0;
      snapshot();
      if (k === "ArrowLeft") b.x0 = clamp(b.x0 - step, 0, W() - w);
      if (k === "ArrowRight") b.x0 = clamp(b.x0 + step, 0, W() - w);
      if (k === "ArrowUp") b.y0 = clamp(b.y0 - step, 0, H() - h);
      if (k === "ArrowDown") b.y0 = clamp(b.y0 + step, 0, H() - h);
      b.x1 = b.x0 + w; b.y1 = b.y0 + h; changed(); e.preventDefault();
    }
  });
  window.addEventListener("keyup", (e) => { if (e.key === " ") { S.space = false; canvas.style.cursor = ""; } });

  function toggleOthers(on) {
    S.showOthers = on && !!(S.data && S.data.others && S.data.others.length);
    const cb = $("#ws-others"); if (cb) cb.checked = S.showOthers;
    draw();
  }
  function undo() { if (!S.undo.length || !editable()) return; S.redo.push(JSON.stringify(S.boxes)); S.boxes = JSON.parse(S.undo.pop()); S.sel = S.sel < 0 ? S.boxes.length - 1 : Math.min(S.sel, S.boxes.length - 1); changed(); }
  function redo() {
    if (!S.redo.length || !editable()) return;
    S.undo.push(JSON.stringify(S.boxes)); S.boxes = JSON.parse(S.redo.pop());
    if (S.sel < 0 || S.sel >= S.boxes.length) S.sel = S.boxes.length - 1;
    changed();
  }
  function deleteSel() { if (S.sel < 0 || !editable()) return; snapshot(); S.boxes.splice(S.sel, 1); S.sel = Math.min(S.sel, S.boxes.length - 1); changed(); }
  function setLabel(code) {
    S.label = code;
    if (S.sel >= 0 && editable() && S.boxes[S.sel].label !== code) { snapshot(); S.boxes[S.sel].label = code; changed(); }
    renderLabels(); draw();
  }

  // ------------------------------------------------------------------ side panel
  function renderLabels() {
    const q = ($("#ws-label-search").value || "").trim().toLowerCase();
    const ul = $("#ws-labels"); ul.innerHTML = "";
    cfg.labels.forEach((l) => {
      if (q && !(l.code.toLowerCase().includes(q) || l.name.toLowerCase().includes(q))) return;
      const li = document.createElement("li");
      const key = l.level === "sub" ? subs.indexOf(l) + 1 : metas.indexOf(l) + 1;
      li.className = "ws-label " + l.level + (l.code === S.label ? " active" : "");
      li.dataset.code = l.code;
      li.innerHTML = `<span class="swatch" style="background:${colourOf(l.code)}"></span><kbd>${key <= 9 ? (l.level === "meta" ? "⇧" : "") + key : ""}</kbd> <span class="nm"></span> <code></code>`;
      li.querySelector(".nm").textContent = l.level === "meta" ? l.name + " (unsure)" : l.name;
      li.querySelector("code").textContent = l.code;
      li.addEventListener("click", () => setLabel(l.code));
      ul.appendChild(li);
    });
  }
  function renderList() {
    const ul = $("#ws-boxes"); ul.innerHTML = "";
    S.boxes.forEach((b, i) => {
      const li = document.createElement("li");
      li.className = "ws-box" + (i === S.sel ? " active" : "");
      li.innerHTML = `<span class="swatch" style="background:${colourOf(b.label)}"></span><b>${i + 1}</b> <span class="nm"></span> <small></small>`;
      li.querySelector(".nm").textContent = labelName(b.label) + (b.difficult ? " · difficult" : "") + (b.truncated ? " · truncated" : "");
      li.querySelector("small").textContent = `${px(b.x0)},${px(b.y0)} – ${px(b.x1)},${px(b.y1)} (${px(b.x1 - b.x0)}×${px(b.y1 - b.y0)})`;
      if (editable()) {
        const del = document.createElement("button"); del.type = "button"; del.className = "mini"; del.textContent = "×"; del.title = "Delete (Del)";
        del.addEventListener("click", (ev) => { ev.stopPropagation(); S.sel = i; deleteSel(); });
        li.appendChild(del);
      }
      li.addEventListener("click", () => { S.sel = i; renderList(); draw(); });
      ul.appendChild(li);
    });
    $("#ws-count").textContent = `${S.boxes.length} box${S.boxes.length === 1 ? "" : "es"}`;
  }
  function renderInfo() {
    const d = S.data, p = d.photo, a = d.annotation;
    $("#ws-photo-title").textContent = `Photo ${p.id}`;
    const caseLink = $("#ws-case"); caseLink.href = p.case_url; caseLink.textContent = `Case ${p.case_ref}`;
    $("#ws-diagnosis").textContent = p.diagnosis ? `${p.diagnosis}${p.diagnosis_confirmed ? " (histopathology)" : " (not confirmed)"}` : "no diagnosis";
    $("#ws-size").textContent = `${p.width}×${p.height} px`;
    const st = $("#ws-annotation-status");
    st.textContent = a ? a.status_display + (cfg.mode === "review" ? ` — by ${a.annotator}` : "") : "To annotate (not started)";
    st.className = "status " + (a ? a.status : "to_annotate");
    const banner = $("#ws-banner"); banner.hidden = true; banner.textContent = "";
    if (d.prefill && !(a && a.boxes.length)) {
      banner.hidden = false; banner.textContent = `Prefilled with ${d.prefill.boxes.length} box(es) from ${d.prefill.from}'s ${d.prefill.status.replace("_", " ")} annotation — check them and save.`;
    } else if (cfg.mode === "review" && d.refusal) {
      banner.hidden = false; banner.textContent = d.refusal;
    } else if (!d.editable && cfg.mode === "annotate" && a) {
      banner.hidden = false; banner.textContent = a.status === "accepted" ? "Accepted: this annotation is final." : "Submitted: waiting for review by the other group (read-only).";
    }
    // exclusion
    const ex = $("#ws-excluded"), rs = $("#ws-exclusion-reason"), nt = $("#ws-exclusion-note");
    ex.checked = !!(a && a.excluded); rs.value = (a && a.exclusion_reason) || ""; nt.value = (a && a.exclusion_note) || "";
    [ex, rs, nt].forEach((el) => (el.disabled = !(d.editable && cfg.mode === "annotate")));
    rs.closest(".ws-exclusion-detail").hidden = !ex.checked;
    // comments
    const cl = $("#ws-comments"); cl.innerHTML = "";
    const comments = (a && a.comments) || [];
    $("#ws-comments-box").hidden = !comments.length;
    comments.forEach((c, i) => {
      const li = document.createElement("li"); li.className = "ws-comment" + (c.resolved ? " resolved" : "");
      li.innerHTML = `<span class="pin">${i + 1}</span> <b></b>: <span class="tx"></span>${c.resolved ? " <small>(resolved)</small>" : ""}`;
      li.querySelector("b").textContent = c.author; li.querySelector(".tx").textContent = c.text;
      li.addEventListener("click", () => { const j = S.boxes.findIndex((b) => b.id && b.id === c.box); if (j >= 0) { S.sel = j; renderList(); draw(); } });
      cl.appendChild(li);
    });
    // the server-rendered gold button belongs to the photo the page was opened with
    document.querySelectorAll(".ws-gold").forEach((f) => (f.hidden = f.dataset.photo !== String(p.id)));
    // status history
    const hl = $("#ws-history"); hl.innerHTML = "";
    ((a && a.history) || []).forEach((h) => {
      const li = document.createElement("li");
      li.textContent = `${h.at.slice(0, 16).replace("T", " ")} · ${h.actor || "—"} · ${h.action.replace("_", " ")} → ${h.to.replace("_", " ")}${h.note ? " — " + h.note : ""}`;
      hl.appendChild(li);
    });
    $("#ws-history-box").hidden = !(a && a.history && a.history.length);
    // other annotators (adjudication)
    const others = d.others || [];
    const op = $("#ws-others-box");
    if (op) {
      op.hidden = !others.length;
      $("#ws-others-list").textContent = others.map((o) => `${o.annotator}${o.is_gold ? " (gold)" : ""}: ${o.boxes.length} box(es), ${o.status}`).join(" · ");
    }
    toggleOthers(S.showOthers);
    // buttons
    document.querySelectorAll("[data-needs-edit]").forEach((b) => (b.disabled = !d.editable));
    document.querySelectorAll("[data-needs-review]").forEach((b) => (b.disabled = !d.can_review));
    const q = S.qIndex >= 0 ? `${S.qIndex + 1} / ${S.queue.length}` : (S.queue.length ? `– / ${S.queue.length}` : "0");
    $("#ws-queue-pos").textContent = `Queue: ${q}`;
  }

  // ------------------------------------------------------------------ loading
  function load(apiUrl, pageUrl) {
    status("Loading…");
    return fetch(apiUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.json(); })
      .then((data) => {
        S.data = data; cfg.api = apiUrl;
        const own = data.annotation ? data.annotation.boxes : [];
        const start = own.length ? own : (data.prefill ? data.prefill.boxes : []);
        S.boxes = start.map((b) => ({ ...b })); S.sel = -1; S.undo = []; S.redo = []; S.rev = 0; S.savedAt = null;
        if (data.photo.diagnosis && byCode[data.photo.diagnosis]) S.label = data.photo.diagnosis; // new boxes default to the case diagnosis
        S.dirty = !own.length && !!(data.prefill && data.prefill.boxes.length) && data.editable;
        S.qIndex = S.queue.findIndex((it) => (cfg.mode === "review" ? it.annotation === (data.annotation || {}).id : it.photo === data.photo.id));
        if (pageUrl) history.replaceState(null, "", pageUrl + location.search);
        document.title = `Photo ${data.photo.id} · Annotate · Derm Portal`;
        renderInfo(); renderList(); renderLabels();
        return new Promise((resolve) => {
          const img = new Image();
          img.onload = () => { S.img = img; fit(); status(S.dirty ? "Prefilled — not saved yet" : "Ready", S.dirty ? "warn" : ""); canvas.dataset.loaded = String(data.photo.id); resolve(); };
          img.onerror = () => { status("The photo could not be loaded.", "bad"); resolve(); };
          img.src = data.photo.url;
        });
      })
      .catch((err) => status("Could not load: " + err.message, "bad"));
  }
  function loadQueue() {
    const qs = new URLSearchParams({ queue: cfg.queue, status: cfg.status || "", label: cfg.label || "" });
    return fetch(cfg.queueApi + "?" + qs, { credentials: "same-origin" }).then((r) => r.json()).then((d) => {
      S.queue = d.items || [];
      if (d.totals) $("#ws-queue-total").textContent = String(cfg.queue === "review" ? d.totals.review : d.totals.annotate);
    });
  }
  async function go(step) {
    if (S.busy) return;
    if (S.dirty && editable() && cfg.mode === "annotate") { const ok = await save(false); if (!ok) return; }
    if (S.dirty && cfg.mode === "review" && !S.leaveOk) { S.leaveOk = true; status("You changed the boxes: accept (fix) first, or press again to leave without saving.", "warn"); return; }
    S.leaveOk = false;
    let i = S.qIndex >= 0 ? S.qIndex + step : (step > 0 ? 0 : S.queue.length - 1);
    if (i < 0 || i >= S.queue.length) { status(step > 0 ? "End of the queue." : "Start of the queue.", "warn"); return; }
    const it = S.queue[i];
    await load(it.api, it.url);
    S.qIndex = i; renderInfo();
  }

  // ------------------------------------------------------------------ saving
  function payloadBoxes() {
    // coordinates as they are: an imported box keeps its sub-pixel values, the editor's edits are whole-pixel steps
    return S.boxes.map((b) => ({ id: b.id || null, x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1, label: b.label, difficult: !!b.difficult, truncated: !!b.truncated, source_box: b.id ? null : (b.source_box || null), origin: (S.originOf ? S.originOf(b) : b.origin) || "drawn" }));
  }
  function showErrors(body) {
    const errs = (body && body.errors) || [{ message: (body && body.detail) || "Not saved." }];
    const ul = $("#ws-errors"); ul.innerHTML = "";
    errs.forEach((e) => { const li = document.createElement("li"); li.textContent = e.message; ul.appendChild(li); });
    if (errs.length && errs[0].box != null) { S.sel = errs[0].box; renderList(); draw(); }
  }
  function post(url, method, body) {
    return fetch(url, { method, credentials: "same-origin", headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(), Accept: "application/json" }, body: JSON.stringify(body) })
      .then(async (r) => ({ ok: r.ok, status: r.status, body: await r.json().catch(() => ({})) }));
  }
  async function save(submit) {
    if (!editable() || cfg.mode !== "annotate" || S.busy) return false;
    S.busy = true; status(submit ? "Submitting…" : "Saving…"); $("#ws-errors").innerHTML = ""; const rev = S.rev;
    const res = await post(cfg.api + "boxes/", "PUT", {
      boxes: payloadBoxes(), submit, excluded: $("#ws-excluded").checked,
      exclusion_reason: $("#ws-exclusion-reason").value, exclusion_note: $("#ws-exclusion-note").value,
    });
    S.busy = false;
    if (!res.ok) { status(res.status === 403 ? "Not allowed." : "Not saved — see the errors.", "bad"); showErrors(res.body); return false; }
    const keepSel = S.sel;
    if (S.rev !== rev && !submit) { S.data = res.body; renderInfo(); return true; }  // edited while saving: keep the edits, still unsaved
    S.data = res.body; S.boxes = res.body.annotation.boxes.map((b) => ({ ...b })); S.sel = Math.min(keepSel, S.boxes.length - 1); S.dirty = false;
    S.savedAt = new Date();
    renderInfo(); renderList(); draw();
    status(submit ? "Submitted for review." : "Saved.", "ok");
    if (submit) { const here = S.qIndex; await loadQueue(); S.qIndex = -1; if (S.queue.length) { const nxt = S.queue[Math.min(Math.max(here, 0), S.queue.length - 1)]; if (nxt && nxt.photo !== S.data.photo.id) await load(nxt.api, nxt.url); } }
    return true;
  }
  async function decide(action) {
    if (cfg.mode !== "review" || S.busy || !S.data.can_review) return;
    const comment = $("#ws-review-comment").value.trim();
    const sel = S.sel >= 0 ? S.boxes[S.sel] : null;
    if (action === "reject" && !comment) { status("Write what to fix before rejecting.", "bad"); $("#ws-review-comment").focus(); return; }
    if (action === "accept" && S.dirty) action = "fix_accept";
    S.busy = true; status("Sending review…");
    const res = await post(cfg.api + "decide/", "POST", { action, comment, note: comment, box: sel && sel.id ? sel.id : null, boxes: payloadBoxes() });
    S.busy = false;
    if (!res.ok) { status("Review not recorded.", "bad"); showErrors(res.body); return; }
    S.data = res.body; S.boxes = res.body.annotation.boxes.map((b) => ({ ...b })); S.dirty = false; $("#ws-review-comment").value = "";
    renderInfo(); renderList(); draw();
    const msg = { accept: "Accepted.", fix_accept: "Fixed and accepted.", reject: "Rejected — sent back to the annotator." }[action];
    status(msg, "ok");
    await loadQueue();  // like CVAT: go on with the next photo waiting for review
    S.qIndex = -1;
    if (S.queue.length) { await load(S.queue[0].api, S.queue[0].url); status(msg + " Next photo.", "ok"); }
    else { renderInfo(); status(msg + " Nothing else to review.", "ok"); }
  }

  // ------------------------------------------------------------------ wiring
  $("#ws-label-search").addEventListener("input", renderLabels);
  $("#ws-label-search").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { // exact code first, then the first sub-class shown, then anything shown
      const q = e.target.value.trim().toLowerCase();
      const shown = [...document.querySelectorAll("#ws-labels li")];
      const pick = shown.find((li) => li.dataset.code.toLowerCase() === q) || shown.find((li) => li.classList.contains("sub")) || shown[0];
      if (pick) setLabel(pick.dataset.code);
      e.target.value = ""; renderLabels(); e.target.blur(); e.preventDefault();
    }
  });
  $("#ws-excluded").addEventListener("change", (e) => { $(".ws-exclusion-detail").hidden = !e.target.checked; S.dirty = true; S.rev = (S.rev || 0) + 1; status("Unsaved changes", "warn"); });
  ["#ws-exclusion-reason", "#ws-exclusion-note"].forEach((s) => $(s).addEventListener("change", () => { S.dirty = true; S.rev = (S.rev || 0) + 1; }));
  const on = (id, fn) => { const el = $(id); if (el) el.addEventListener("click", fn); };
  on("#ws-save", () => save(false)); on("#ws-submit", () => save(true));
  on("#ws-prev", () => go(-1)); on("#ws-next", () => go(1)); on("#ws-fit", fit);
  on("#ws-zoom-in", () => { const r = stage.getBoundingClientRect(); zoomAt(r.width / 2, r.height / 2, 1.25); });
  on("#ws-zoom-out", () => { const r = stage.getBoundingClientRect(); zoomAt(r.width / 2, r.height / 2, 0.8); });
  on("#ws-undo", undo); on("#ws-redo", redo); on("#ws-delete", deleteSel);
  const oc = $("#ws-others"); if (oc) oc.addEventListener("change", (e) => toggleOthers(e.target.checked));
  on("#ws-accept", () => decide("accept")); on("#ws-fix-accept", () => decide("fix_accept")); on("#ws-reject", () => decide("reject"));
  window.addEventListener("resize", () => { resize(); });
  window.addEventListener("beforeunload", (e) => { if (S.dirty && editable()) { e.preventDefault(); e.returnValue = ""; } });

  resize();
  loadQueue().catch(() => {}).then(() => load(cfg.api));
  S.save = save; S.editable = editable; S.changed = changed; S.snapshot = snapshot;  // for workspace_autosave.js / _proposal.js
  window.dermWorkspace = S; // for debugging, the autosave and the browser test
})();
