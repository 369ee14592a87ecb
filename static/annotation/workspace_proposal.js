/* The model's proposed first box (the lesion's outline under the active model's Grad-CAM of its
 * top class, or the map's hot region where the photo shows no clear outline), drawn
 * dashed with the class and probability while the photo has no box yet; A accepts it. The box
 * counts as the model's (kept out of agreement) until it is moved, resized or relabelled.
 * Uses workspace.js's S (window.dermWorkspace). */
(function () {
  const cfg = JSON.parse(document.getElementById("ws-config").textContent);
  const S = window.dermWorkspace;
  if (!S || cfg.mode !== "annotate") return;
  const same = (b, p) => b.x0 === p.x0 && b.y0 === p.y0 && b.x1 === p.x1 && b.y1 === p.y1;
  const offered = () => { const p = S.data && S.data.proposal; return p && S.editable() && !S.boxes.length ? p : null; };

  S.originOf = (b) => {
    const p = S.data && S.data.proposal;
    if (b.origin === "proposed") return p && same(b, p) && b.label === b.proposedLabel ? "proposed" : "drawn";
    return b.origin || "drawn";
  };
  S.overlays = (S.overlays || []).concat([(ctx, toScr) => {
    const p = offered(); if (!p) return;
    const [x0, y0] = toScr(p.x0, p.y0), [x1, y1] = toScr(p.x1, p.y1);
    ctx.lineWidth = 2; ctx.strokeStyle = "#ff9f1c"; ctx.setLineDash([7, 5]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0); ctx.setLineDash([]);
    const t = `Model: ${p.label || "lesion"}${p.probability != null ? " " + Math.round(p.probability * 100) + "%" : ""} · A accepts`;
    ctx.font = "600 12px system-ui, sans-serif"; const tw = ctx.measureText(t).width + 8;
    const ty = y1 + 19 <= ctx.canvas.clientHeight ? y1 + 2 : Math.max(0, y0 - 19);  // below the box, else above it
    ctx.fillStyle = "rgba(0,0,0,.7)"; ctx.fillRect(x0, ty, tw, 17); ctx.fillStyle = "#ff9f1c"; ctx.fillText(t, x0 + 4, ty + 13);
  }]);
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || (t && ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    if (e.key !== "a" && e.key !== "A") return;
    const p = offered(); if (!p) return;
    const label = p.label || S.label;
    S.snapshot();
    S.boxes.push({ id: null, x0: p.x0, y0: p.y0, x1: p.x1, y1: p.y1, label, proposedLabel: label, difficult: false, truncated: false, origin: "proposed" });
    S.sel = S.boxes.length - 1; S.changed(); e.preventDefault();
  });
})();
