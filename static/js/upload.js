// Drag-and-drop photo upload. Each file is sent on its own so one bad file never
// blocks the others; the server's per-file verdict is listed under the drop zone.
(function () {
  function csrf(form) { var i = form.querySelector('[name=csrfmiddlewaretoken]'); return i ? i.value : ''; }

  function addThumb(photo) {
    var gallery = document.getElementById('gallery');
    if (!gallery) return;
    var empty = document.getElementById('no-photos'); if (empty) empty.remove();
    var fig = document.createElement('figure'); fig.className = 'thumb'; fig.dataset.photo = photo.id;
    fig.innerHTML = '<a target="_blank" href="/photos/' + photo.id + '/file"><img alt="Photo ' + photo.id +
      '" src="/photos/' + photo.id + '/file?w=320"></a><figcaption></figcaption>';
    fig.querySelector('figcaption').textContent = (photo.modality_display ? photo.modality_display + ' · ' : '') + photo.width + '×' + photo.height;
    gallery.appendChild(fig);
    var count = document.getElementById('photo-count');
    if (count) count.textContent = gallery.querySelectorAll('figure.thumb').length;
    document.dispatchEvent(new CustomEvent('derm:photo-added', { detail: photo }));
  }

  function mb(n) { var v = n / 1048576; return v === Math.round(v) ? String(v) : v.toFixed(1); }

  function report(list, cls, text) {
    var li = document.createElement('li'); li.className = cls; li.textContent = text; list.appendChild(li);
  }

  function uploadFiles(form, files) {
    var list = form.querySelector('.upload-results');
    var modality = form.querySelector('[name=modality]');
    var maxBytes = parseInt(form.dataset.maxBytes || '0', 10);
    Array.prototype.forEach.call(files, function (file) {
      if (maxBytes && file.size > maxBytes) {  // refused here: no point sending it
        report(list, 'err', '✗ ' + file.name + ': the file is ' + mb(file.size) + ' MB; the limit is ' + mb(maxBytes) + ' MB.');
        return;
      }
      var data = new FormData();
      data.append('photos', file);
      if (modality) data.append('modality', modality.value);
      report(list, 'pending', 'Uploading ' + file.name + '…');
      var pending = list.lastChild;
      fetch(form.action, { method: 'POST', body: data, headers: { 'X-CSRFToken': csrf(form), 'Accept': 'application/json', 'X-Requested-With': 'XMLHttpRequest' }, credentials: 'same-origin' })
        .then(function (r) {
          return r.json().catch(function () {
            return { errors: [{ error: file.name + ': the server answered ' + r.status + ' ' + r.statusText }] };
          });
        })
        .then(function (res) {
          pending.remove();
          (res.stored || []).forEach(function (p) { report(list, 'ok', '✓ ' + p.name + ' stored (' + p.width + '×' + p.height + ')'); addThumb(p); });
          (res.errors || []).forEach(function (e) { report(list, 'err', '✗ ' + e.error); });
        })
        .catch(function (err) { pending.remove(); report(list, 'err', '✗ ' + file.name + ': upload failed (' + err + ')'); });
    });
  }

  var zone = document.getElementById('dropzone');
  if (zone) {
    var input = zone.querySelector('input[type=file]');
    zone.addEventListener('dragover', function (e) { e.preventDefault(); zone.classList.add('over'); });
    zone.addEventListener('dragleave', function () { zone.classList.remove('over'); });
    zone.addEventListener('drop', function (e) { e.preventDefault(); zone.classList.remove('over'); uploadFiles(zone, e.dataTransfer.files); });
    input.addEventListener('change', function () { uploadFiles(zone, input.files); input.value = ''; });
  }

  // New-case form: dropped files join the form's file input and are listed.
  var createZone = document.getElementById('create-dropzone');
  if (createZone) {
    var cinput = createZone.querySelector('input[type=file]');
    var flist = createZone.querySelector('.file-list');
    function show() {
      flist.innerHTML = '';
      var maxBytes = parseInt(createZone.dataset.maxBytes || '0', 10);
      Array.prototype.forEach.call(cinput.files, function (f) {
        if (maxBytes && f.size > maxBytes) report(flist, 'err', f.name + ' (' + mb(f.size) + ' MB): over the ' + mb(maxBytes) + ' MB limit, it will be refused');
        else report(flist, '', f.name + ' (' + Math.round(f.size / 1024) + ' kB)');
      });
    }
    createZone.addEventListener('dragover', function (e) { e.preventDefault(); createZone.classList.add('over'); });
    createZone.addEventListener('dragleave', function () { createZone.classList.remove('over'); });
    createZone.addEventListener('drop', function (e) {
      e.preventDefault(); createZone.classList.remove('over');
      var dt = new DataTransfer();
      Array.prototype.forEach.call(cinput.files, function (f) { dt.items.add(f); });
      Array.prototype.forEach.call(e.dataTransfer.files, function (f) { dt.items.add(f); });
      cinput.files = dt.files; show();
    });
    cinput.addEventListener('change', show);
  }
})();
