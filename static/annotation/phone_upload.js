// Mobile upload page (opened from the desk's QR code). Each chosen file is sent on its
// own, one after the other, so every file gets its own verdict and a bad one never
// blocks the others. The page shows the server's message for each file.
(function () {
  var form = document.getElementById('phone-form');
  if (!form) return;
  var results = document.getElementById('phone-results');
  var done = document.getElementById('phone-done');
  var remainingEl = document.getElementById('remaining');
  var inputs = form.querySelectorAll('input[type=file]');
  var queue = Promise.resolve();

  function csrf() { return form.querySelector('[name=csrfmiddlewaretoken]').value; }
  function modality() { var r = form.querySelector('[name=modality]:checked'); return r ? r.value : 'clinical'; }

  function row(file) {
    var li = document.createElement('li'); li.className = 'pending';
    if (file && /^image\//.test(file.type)) {
      var img = document.createElement('img'); img.alt = ''; img.src = URL.createObjectURL(file);
      img.onload = function () { URL.revokeObjectURL(img.src); };
      img.onerror = function () { img.remove(); };
      li.appendChild(img);
    }
    var span = document.createElement('span'); span.textContent = 'Sending ' + (file ? file.name : '') + '…';
    li.appendChild(span);
    results.insertBefore(li, results.firstChild);
    return { li: li, say: function (cls, text) { li.className = cls; span.textContent = text; } };
  }

  function finish(text) {
    done.textContent = text; done.hidden = false;
    Array.prototype.forEach.call(inputs, function (i) { i.disabled = true; i.closest('label').classList.add('disabled'); });
  }

  function send(file) {
    var r = row(file);
    var data = new FormData();
    data.append('photos', file, file.name);
    data.append('modality', modality());
    return fetch(window.location.pathname, {
      method: 'POST', body: data, credentials: 'same-origin',
      headers: { 'X-CSRFToken': csrf(), 'Accept': 'application/json', 'X-Requested-With': 'XMLHttpRequest' }
    }).then(function (resp) {
      return resp.json().catch(function () { return { error: 'The server answered ' + resp.status + '.' }; })
        .then(function (res) { return { status: resp.status, res: res }; });
    }).then(function (out) {
      var res = out.res;
      if (res.stored && res.stored.length) {
        r.say('ok', '✓ ' + file.name + ' added (' + res.stored[0].width + '×' + res.stored[0].height + ')');
      } else if (res.errors && res.errors.length) {
        r.say('err', '✗ ' + res.errors.map(function (e) { return e.error; }).join(' '));
      } else {
        r.say('err', '✗ ' + file.name + ': ' + (res.error || 'not stored.'));
      }
      if (typeof res.remaining === 'number' && remainingEl) remainingEl.textContent = res.remaining;
      if (out.status === 404 || out.status === 410 || out.status === 429) finish(res.error || 'This link can no longer be used.');
      else if (res.state && res.state !== 'active') finish(res.state === 'used_up'
        ? 'All photos for this link have been sent. Ask at the desk for a new QR code to add more.'
        : 'This link can no longer be used. Ask at the desk for a new QR code.');
    }).catch(function (err) {
      r.say('err', '✗ ' + file.name + ': could not reach the clinic server (' + err.message + '). Check the Wi-Fi and try again.');
    });
  }

  Array.prototype.forEach.call(inputs, function (input) {
    input.addEventListener('change', function () {
      var files = Array.prototype.slice.call(input.files);
      input.value = '';
      files.forEach(function (f) { queue = queue.then(function () { return send(f); }); });
    });
  });
})();
