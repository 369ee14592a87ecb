// Desk side of "Upload from phone": asks for a link, shows its QR code, and while the
// code is open polls the case's photos every 3 s, adding new ones to #gallery.
(function () {
  var panel = document.getElementById('phone-panel');
  if (!panel || panel.dataset.ready) return;
  panel.dataset.ready = '1';
  var form = panel.querySelector('.phone-open-form');
  var box = document.getElementById('phone-qr');
  var code = document.getElementById('phone-qr-code');
  var urlEl = document.getElementById('phone-url');
  var stateEl = document.getElementById('phone-state');
  var receivedEl = document.getElementById('phone-received');
  var POLL_MS = 3000;
  var timer = null, clock = null, token = null, received = 0, deadline = 0;

  function csrf() { return panel.querySelector('[name=csrfmiddlewaretoken]').value; }
  function headers() { return { 'X-CSRFToken': csrf(), 'Accept': 'application/json', 'X-Requested-With': 'XMLHttpRequest' }; }

  function lastPhotoId() {
    var ids = Array.prototype.map.call(document.querySelectorAll('#gallery [data-photo]'), function (el) { return +el.dataset.photo || 0; });
    return ids.length ? Math.max.apply(null, ids) : 0;
  }

  // Mirrors addThumb in static/js/upload.js.
  function addThumb(photo) {
    var gallery = document.getElementById('gallery');
    if (!gallery || gallery.querySelector('[data-photo="' + photo.id + '"]')) return false;
    var empty = document.getElementById('no-photos'); if (empty) empty.remove();
    var fig = document.createElement('figure'); fig.className = 'thumb from-phone'; fig.dataset.photo = photo.id;
    var a = document.createElement('a'); a.target = '_blank'; a.href = photo.url;
    var img = document.createElement('img'); img.alt = 'Photo ' + photo.id; img.src = photo.url + '?w=320';
    a.appendChild(img); fig.appendChild(a);
    var cap = document.createElement('figcaption');
    cap.textContent = photo.modality_display + ' · ' + photo.width + '×' + photo.height + ' · from phone';
    fig.appendChild(cap);
    gallery.appendChild(fig);
    document.dispatchEvent(new CustomEvent('derm:photo-added', { detail: photo }));
    return true;
  }

  function mmss(s) { s = Math.max(0, s | 0); return Math.floor(s / 60) + ':' + ('0' + (s % 60)).slice(-2); }

  function showState(t) {
    if (!t) return;
    token = t;
    var msg;
    if (t.state === 'active') {
      msg = t.photos_uploaded + ' of ' + t.max_photos + ' photos received · expires in ' + mmss((deadline - Date.now()) / 1000);
    } else if (t.state === 'used_up') msg = 'All ' + t.max_photos + ' photos received: this link is used up.';
    else if (t.state === 'expired') msg = 'This link has expired. Open a new one to add more photos.';
    else msg = 'This link was cancelled.';
    stateEl.textContent = msg;
    stateEl.className = 'phone-state ' + t.state;
    if (t.state !== 'active') { box.classList.add('inactive'); stop(false); }
  }

  function poll() {
    if (!token) return;
    var asked = token.id;
    fetch(panel.dataset.photosUrl + '?after=' + lastPhotoId() + '&token=' + asked, { headers: headers(), credentials: 'same-origin' })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (res) {
        res.photos.forEach(function (p) { if (addThumb(p)) received += 1; });
        if (!token || token.id !== asked) return; // the panel was closed or a new link opened meanwhile
        if (received) receivedEl.textContent = received + ' new photo' + (received > 1 ? 's' : '') + ' added to the gallery.';
        if (res.token) showState(res.token);
      })
      .catch(function () { /* keep polling; a hiccup must not close the panel */ });
  }

  function stop(hide) {
    if (timer) { clearInterval(timer); timer = null; }
    if (clock) { clearInterval(clock); clock = null; }
    if (hide) { box.hidden = true; code.innerHTML = ''; urlEl.textContent = ''; token = null; }
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    stop(true);
    fetch(panel.dataset.createUrl, { method: 'POST', headers: headers(), credentials: 'same-origin' })
      .then(function (r) { if (!r.ok) throw new Error('the server answered ' + r.status); return r.json(); })
      .then(function (res) {
        code.innerHTML = res.svg; // SVG made by the server (segno), not user input
        urlEl.textContent = res.url;
        box.hidden = false; box.classList.remove('inactive');
        if (box.scrollIntoView) box.scrollIntoView({ block: 'center' });
        received = 0; receivedEl.textContent = '';
        deadline = Date.now() + res.token.seconds_left * 1000;
        showState(res.token);
        timer = setInterval(poll, POLL_MS);
        clock = setInterval(function () { if (token && token.state === 'active') showState(token); }, 1000);
      })
      .catch(function (err) { stateEl.textContent = 'Could not open a phone link: ' + err.message; box.hidden = false; });
  });

  document.getElementById('phone-close').addEventListener('click', function () { poll(); stop(true); });
  document.getElementById('phone-revoke').addEventListener('click', function () {
    if (!token) return;
    fetch(token.revoke_url, { method: 'POST', headers: headers(), credentials: 'same-origin' })
      .then(function (r) { return r.json(); })
      .then(function (res) { poll(); showState(res.token); });
  });
  document.addEventListener('visibilitychange', function () { if (!document.hidden && timer) poll(); });
})();
