// Training run page: polls the run's state once a second until it finishes.
(function () {
  var root = document.getElementById('training-state');
  if (!root) return;
  function $(id) { return document.getElementById(id); }
  function fmtEta(s) {
    if (s === undefined || s === null) return '—';
    s = Math.round(s); var m = Math.floor(s / 60);
    return m ? m + ' min ' + (s % 60) + ' s' : s + ' s';
  }
  function render(st) {
    var p = st.progress || {};
    var status = $('run-status'); status.textContent = st.status_label; status.className = 'status ' + st.status;
    $('st-stage').textContent = (p.stage || '—') +
      (p.stage === 'fine' && p.members > 1 ? ' ' + p.member + '/' + p.members : '');
    $('st-epoch').textContent = p.epoch ? p.epoch + ' / ' + p.epochs : '—';
    $('st-loss').textContent = (typeof p.loss === 'number') ? p.loss.toFixed(4) : '—';
    $('st-eta').textContent = st.finished ? '—' : fmtEta(p.eta_seconds);
    if (st.n_cases !== null) $('st-data').textContent = st.n_cases + ' / ' + st.n_photos;
    var frac = 0;
    if (p.epochs && p.epoch) frac = ((p.epoch - 1) + (p.batches ? (p.batch || 0) / p.batches : 1)) / p.epochs;
    if (st.status === 'succeeded') frac = 1;
    $('st-bar').style.width = Math.max(0, Math.min(100, 100 * frac)).toFixed(0) + '%';
    $('st-log').textContent = st.log;
    if (st.error) { $('st-error').hidden = false; $('st-error').textContent = st.error; }
    if (st.model_url) { $('st-model').hidden = false; $('st-model-link').href = st.model_url; $('st-model-link').textContent = 'model version ' + st.model_version; }
    var cancel = $('cancel-form'); if (cancel && st.finished) cancel.remove();
  }
  function poll() {
    fetch(root.dataset.url, { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (st) {
      render(st);
      if (!st.finished) setTimeout(poll, 1000);
    }).catch(function () { setTimeout(poll, 5000); });
  }
  var initial = JSON.parse(document.getElementById('training-initial').textContent);
  render(initial);
  if (!initial.finished) setTimeout(poll, 1000);
})();
