// Case page: the model's differential per photo. Polls a small JSON state endpoint and swaps in a
// photo's block when its prediction changes (new photo, pending -> done), so results appear
// without reloading. Heat-map toggle (one overlay at a time) and opacity slider per photo.
(function () {
  var panel = document.getElementById('prediction-panel');
  if (!panel) return;
  var blocks = document.getElementById('prediction-blocks');
  var stateUrl = panel.dataset.stateUrl;
  var blockUrl = function (pk) { return panel.dataset.blockUrl.replace(/\/0\//, '/' + pk + '/'); };
  var timer = null, busy = false, fastUntil = 0, pendingSince = 0;

  function opacityOf(block) {
    var s = block.querySelector('.ov-opacity');
    return s ? s.value / 100 : 0.6;
  }

  panel.addEventListener('change', function (e) {
    var block = e.target.closest('.pp-photo');
    if (!block) return;
    if (e.target.type === 'radio' && e.target.name.indexOf('ov-') === 0) {
      block.querySelectorAll('.pp-overlay').forEach(function (img) {
        img.hidden = img.dataset.overlay !== e.target.value;
        img.style.opacity = opacityOf(block);
      });
    }
  });
  panel.addEventListener('input', function (e) {
    if (!e.target.classList.contains('ov-opacity')) return;
    var block = e.target.closest('.pp-photo');
    block.querySelectorAll('.pp-overlay').forEach(function (img) { img.style.opacity = e.target.value / 100; });
    var out = e.target.parentNode.querySelector('output'); if (out) out.textContent = e.target.value + '%';
  });

  function swap(pk, html) {
    var tmp = document.createElement('div'); tmp.innerHTML = html.trim();
    var fresh = tmp.firstElementChild;
    var old = document.getElementById('prediction-photo-' + pk);
    if (old) { old.replaceWith(fresh); } else {
      var none = blocks.querySelector('.pp-none'); if (none) none.remove();
      blocks.appendChild(fresh);
    }
  }

  function schedule(ms) { clearTimeout(timer); timer = setTimeout(poll, ms); }

  function poll() {
    if (busy) return schedule(300);
    busy = true;
    fetch(stateUrl, { credentials: 'same-origin', headers: { 'Accept': 'application/json' } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (state) {
        var head = document.getElementById('pp-model');   // names the models of the results shown
        if (head && state.header && head.outerHTML !== state.header.trim()) {
          var t = document.createElement('div'); t.innerHTML = state.header.trim();
          if (t.firstElementChild) head.replaceWith(t.firstElementChild);
        }
        var jobs = state.photos.map(function (ph) {
          var el = document.getElementById('prediction-photo-' + ph.photo);
          if (el && el.dataset.signature === ph.signature) return null;
          return fetch(blockUrl(ph.photo), { credentials: 'same-origin' })
            .then(function (r) { return r.ok ? r.text() : null; })
            .then(function (html) { if (html) swap(ph.photo, html); });
        }).filter(Boolean);
        return Promise.all(jobs).then(function () { return state.pending; });
      })
      .then(function (pending) {
        busy = false;
        if (pending && !pendingSince) pendingSince = Date.now();
        if (!pending) pendingSince = 0;
        // fast while a result is due; slower if a job seems stuck (e.g. no worker running)
        var stuck = pendingSince && Date.now() - pendingSince > 60000;
        schedule((pending && !stuck) || Date.now() < fastUntil ? 500 : (pending ? 3000 : 4000));
      })
      .catch(function () { busy = false; schedule(8000); });
  }

  document.addEventListener('derm:photo-added', function () { fastUntil = Date.now() + 10000; schedule(150); });
  var anyPending = blocks.querySelector('.pp-photo[data-status=pending], .pp-photo[data-status=running]');
  schedule(anyPending ? 500 : 4000);
})();
