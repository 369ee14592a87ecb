/* Timed autosave of the annotator's draft, and a visible saved / unsaved state.
 * Saves once the boxes have stayed unsaved for cfg.autosaveSeconds (not mid-drag), only
 * after the annotator changed something (opening a pre-filled photo does not claim it).
 * A save the server refuses is not retried until the next change. Uses workspace.js's S. */
(function () {
  const cfg = JSON.parse(document.getElementById("ws-config").textContent);
  const el = document.getElementById("ws-saved-state");
  if (!el || cfg.mode !== "annotate") return;
  const every = Math.max(1, Number(cfg.autosaveSeconds) || 20) * 1000;
  let dirtySince = null, failedRev = null, auto = false;
  const ws = () => window.dermWorkspace;
  const hhmmss = (d) => d.toTimeString().slice(0, 8);

  function show() {
    const s = ws(); if (!s || !s.data) return;
    let text, state;
    if (!s.editable()) { text = "Read-only"; state = "readonly"; }
    else if (s.busy) { text = "Saving…"; state = "saving"; }
    else if (s.dirty) { text = failedRev === s.rev ? "Unsaved — fix the errors" : "Unsaved changes"; state = "unsaved"; }
    else if (s.savedAt) { text = `${auto ? "Autosaved" : "Saved"} ${hhmmss(s.savedAt)}`; state = "saved"; }
    else { text = "No unsaved changes"; state = "saved"; }
    el.textContent = text; el.dataset.state = state;
  }

  setInterval(() => {
    const s = ws(); show();
    if (!s || !s.data) return;
    if (!(s.dirty && s.rev > 0 && s.editable() && !s.busy && !s.drag && failedRev !== s.rev)) { if (!s.dirty) dirtySince = null; return; }
    dirtySince = dirtySince || Date.now();
    if (Date.now() - dirtySince < every) return;
    dirtySince = null;
    const rev = s.rev;
    s.save(false).then((ok) => { if (ok) auto = true; else failedRev = rev; show(); });
  }, 250);
  document.addEventListener("ws:changed", show);
  // a manual save (button, Ctrl+S, N/P) is not an autosave
  ["ws-save", "ws-submit"].forEach((id) => { const b = document.getElementById(id); if (b) b.addEventListener("click", () => { auto = false; }, true); });
  document.addEventListener("keydown", (e) => { if (e.ctrlKey || e.key === "n" || e.key === "p") auto = false; }, true);
})();
