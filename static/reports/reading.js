// Reading a case: zoom/pan the photo, switch photos, count the active reading time.
(function () {
  var stage = document.getElementById("stage");
  var view = { scale: 1, x: 0, y: 0 };
  function img() { return stage.querySelector(".study-photo.active"); }
  function apply() { var i = img(); if (i) i.style.transform = "translate(" + view.x + "px," + view.y + "px) scale(" + view.scale + ")"; }
  function fit() {
    var i = img(); if (!i || !i.naturalWidth) return;
    var s = Math.min(stage.clientWidth / i.naturalWidth, stage.clientHeight / i.naturalHeight);
    view.scale = s; view.x = (stage.clientWidth - i.naturalWidth * s) / 2; view.y = (stage.clientHeight - i.naturalHeight * s) / 2;
    apply();
  }
  function zoomAt(factor, cx, cy) {
    var ns = Math.max(0.05, Math.min(view.scale * factor, 20));
    factor = ns / view.scale;
    view.x = cx - (cx - view.x) * factor; view.y = cy - (cy - view.y) * factor; view.scale = ns; apply();
  }
  if (stage) {
    stage.querySelectorAll(".study-photo").forEach(function (i) { i.addEventListener("load", function () { if (i.classList.contains("active")) fit(); }); });
    if (img() && img().complete) fit();
    window.addEventListener("resize", fit);
    stage.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = stage.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    var drag = null;
    stage.addEventListener("mousedown", function (e) { drag = { x: e.clientX - view.x, y: e.clientY - view.y }; stage.classList.add("dragging"); });
    window.addEventListener("mousemove", function (e) { if (!drag) return; view.x = e.clientX - drag.x; view.y = e.clientY - drag.y; apply(); });
    window.addEventListener("mouseup", function () { drag = null; stage.classList.remove("dragging"); });
    stage.addEventListener("dblclick", fit);
    document.querySelectorAll("[data-zoom]").forEach(function (b) {
      b.addEventListener("click", function () {
        var k = b.getAttribute("data-zoom");
        if (k === "reset") fit(); else zoomAt(k === "in" ? 1.25 : 0.8, stage.clientWidth / 2, stage.clientHeight / 2);
      });
    });
    document.querySelectorAll(".photo-tab").forEach(function (b) {
      b.addEventListener("click", function () {
        var idx = b.getAttribute("data-idx");
        stage.querySelectorAll(".study-photo").forEach(function (i) { i.classList.toggle("active", i.getAttribute("data-idx") === idx); });
        document.querySelectorAll(".photo-tab").forEach(function (t) { t.classList.toggle("active", t === b); });
        fit();
      });
    });
    document.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT" && e.target.type === "text") return;
      if (e.key === "+" || e.key === "=") zoomAt(1.25, stage.clientWidth / 2, stage.clientHeight / 2);
      else if (e.key === "-") zoomAt(0.8, stage.clientWidth / 2, stage.clientHeight / 2);
      else if (e.key === "0") fit();
    });
  }
  // Active time: counted only while the page is visible and the window has focus.
  var active = 0, since = (document.visibilityState === "visible") ? performance.now() : null;
  function pause() { if (since !== null) { active += performance.now() - since; since = null; } }
  function resume() { if (since === null && document.visibilityState === "visible") since = performance.now(); }
  document.addEventListener("visibilitychange", function () { document.visibilityState === "visible" ? resume() : pause(); });
  window.addEventListener("blur", pause);
  window.addEventListener("focus", resume);
  var form = document.getElementById("answer-form");
  if (form) form.addEventListener("submit", function () {
    pause(); document.getElementById("active_ms").value = Math.round(active); resume();
  });
  var range = document.getElementById("confidence"), out = document.getElementById("confidence-out");
  if (range && out) range.addEventListener("input", function () { out.textContent = range.value; });
})();
