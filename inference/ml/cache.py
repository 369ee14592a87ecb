"""The decoded-image cache: every photo of a run decoded once (``data.load_image``) into a uint8 row
(3, size, size).

On disk (``build_cache`` with a ``cache_dir``) the rows of one data fingerprint, photo order, size and
colour constancy lie back to back in ``<fingerprint>_<order>_<size>[_<colour>].u8``, with ``.json``
beside it (shape, unreadable photos). The file is built once as ``.u8.partial``; after every chunk of
photos ``.u8.progress.json`` records the rows done, so a build that was interrupted (or cancelled)
resumes there. Readers get ``DiskImages``: rows are read from the file as they are indexed, so a
run's resident memory does not grow with the number of photos (the kernel's page cache holds the
file, and gives it back under pressure).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .artefact import write_atomic
from .data import Record, data_fingerprint, load_image
from .errors import TrainingCancelled

CHUNK = 256  # photos decoded between two progress records (and checks for a stop)


class DiskImages:
    """uint8 images (N, 3, S, S) in a cache file, read row by row when indexed.

    ``images[idx]`` (an int, a slice, a list, an array or a tensor of indices) returns a uint8 tensor
    of those rows; ``take(idx)`` returns a view of some rows without reading them. Safe to share
    between threads (positional reads); each process opens the file for itself."""

    def __init__(self, path, n_file: int, size: int, rows: np.ndarray | None = None):
        self.path, self.n_file, self.size = Path(path), int(n_file), int(size)
        self.rows = np.arange(self.n_file, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.row_bytes = 3 * self.size * self.size
        self._fd, self._pid = None, None

    dtype = torch.uint8

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked process opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _positions(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            return np.arange(len(self.rows))[idx]
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        a = np.asarray(idx)
        return np.flatnonzero(a) if a.dtype == bool else a.astype(np.int64)

    def take(self, idx) -> DiskImages:
        """The rows ``idx`` as another ``DiskImages`` (nothing is read)."""
        return DiskImages(self.path, self.n_file, self.size, self.rows[self._positions(idx)])

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, (int, np.integer)):
            return self[[int(idx)]][0]
        rows = self.rows[self._positions(idx)]
        out = np.empty((len(rows), 3, self.size, self.size), dtype=np.uint8)
        fd, rb = self._file(), self.row_bytes
        i = 0
        while i < len(rows):  # runs of consecutive rows in one read
            j = i + 1
            while j < len(rows) and rows[j] == rows[j - 1] + 1:
                j += 1
            view = memoryview(out[i:j].reshape(-1))
            got = os.preadv(fd, [view], int(rows[i]) * rb)
            if got != (j - i) * rb:
                raise OSError(f"{self.path.name}: short read of the image cache (truncated file?)")
            i = j
        return torch.from_numpy(out)

    def numpy(self) -> np.ndarray:
        return self[:].numpy()


def subset(images, idx):
    """Rows ``idx`` of a cache (``DiskImages``: a view, nothing read) or of an in-memory tensor."""
    if isinstance(images, DiskImages):
        return images.take(idx)
    return images[torch.as_tensor(np.asarray(idx), dtype=torch.long)]


def default_cache_dir() -> str:
    """``DERM_ML_CACHE``, else ``$XDG_CACHE_HOME/derm_portal_ml`` (``~/.cache`` without it)."""
    return os.environ.get("DERM_ML_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "derm_portal_ml"
    )


def cache_file(
    records: Sequence[Record], size: int, cache_dir, fingerprint: str | None = None, colour: str = "none"
) -> Path:
    """Where the cache of ``records`` (in this order) at ``size`` and ``colour`` lives in ``cache_dir``."""
    fingerprint = fingerprint or data_fingerprint(records)
    order = hashlib.sha256("\n".join(r.image for r in records).encode()).hexdigest()[:8]
    suffix = "" if colour == "none" else f"_{colour}"
    return Path(cache_dir) / f"{fingerprint}_{order}_{size}{suffix}.u8"


def _decoder(records: Sequence[Record], size: int, colour: str):
    def work(i):
        try:
            return i, load_image(records[i].path, size, colour).transpose(2, 0, 1), None
        except FileNotFoundError:
            return i, None, "file not found"
        except Exception as e:  # corrupt / unreadable (no machine paths in the message)
            msg = str(e).replace(str(records[i].path), records[i].image)
            return i, None, f"{type(e).__name__}: {msg}"

    return work


def _decode(records, size, colour, start, put, progress, workers, should_stop, after_chunk=None):
    """Decode photos ``start``.. in chunks, ``put(i, row)`` each; returns the (image, error) of the bad ones."""
    n, bad, work = len(records), [], _decoder(records, size, colour)
    if progress:
        progress(start, n)  # where this build starts (a resumed one: the rows already done)
    with ThreadPoolExecutor(max(1, workers)) as ex:
        for s in range(start, n, CHUNK):
            if should_stop is not None and should_stop():
                raise TrainingCancelled("cancelled while decoding images")
            for i, row, err in ex.map(work, range(s, min(n, s + CHUNK))):
                if err is None:
                    put(i, row)
                else:
                    bad.append((records[i].image, err))
            done = min(n, s + CHUNK)
            if after_chunk is not None:
                after_chunk(done, bad)
            if progress:
                progress(done, n)
    return bad


def build_cache(
    records: Sequence[Record],
    size: int,
    cache_dir=None,
    fingerprint: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 2,
    should_stop: Callable[[], bool] | None = None,
    colour: str = "none",
):
    """Decode every photo once (``load_image`` with ``colour``); returns ``(images, ok_mask, bad)``.

    ``bad`` lists ``(image, error)`` for corrupt or missing files (their rows are zero and ok_mask
    False). Without ``cache_dir`` ``images`` is an in-memory uint8 tensor (N, 3, size, size); with
    it, a ``DiskImages`` over the cache file, built (or resumed) first and reused by later runs."""
    n = len(records)
    if cache_dir is None:
        arr = np.zeros((n, 3, size, size), dtype=np.uint8)

        def put(i, row):
            arr[i] = row

        bad = _decode(records, size, colour, 0, put, progress, workers, should_stop)
        return torch.from_numpy(arr), _ok_mask(records, bad), bad
    path = cache_file(records, size, cache_dir, fingerprint, colour)
    meta_path = path.with_suffix(".json")
    meta = _read_json(meta_path) if path.is_file() else None
    if meta is not None and meta.get("shape") == [n, 3, size, size] and path.stat().st_size == n * 3 * size * size:
        if progress:
            progress(n, n)
        bad = [tuple(b) for b in meta.get("bad", [])]
        return DiskImages(path, n, size), _ok_mask(records, bad), bad
    bad = _build_file(records, size, colour, path, progress, workers, should_stop)
    return DiskImages(path, n, size), _ok_mask(records, bad), bad


def _build_file(records, size, colour, path: Path, progress, workers, should_stop) -> list:
    """Decode into ``<path>.partial``, resuming from its progress record; move it into place when done."""
    n, rb = len(records), 3 * size * size
    partial = path.with_name(path.name + ".partial")
    record = path.with_name(path.name + ".progress.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    prev = _read_json(record) if partial.is_file() else None
    if prev is not None and prev.get("shape") == [n, 3, size, size]:
        start, bad = int(prev["done"]), [tuple(b) for b in prev.get("bad", [])]
    else:
        start, bad = 0, []
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, n * rb)  # rows not yet written (and unreadable photos) read as zeros

        def put(i, row):
            os.pwrite(fd, np.ascontiguousarray(row).tobytes(), i * rb)

        def after_chunk(done, new_bad):  # the rows are on disk before the record says so
            os.fsync(fd)
            _write_json(record, {"shape": [n, 3, size, size], "done": done, "bad": bad + new_bad})

        bad = bad + _decode(records, size, colour, start, put, progress, workers, should_stop, after_chunk)
    finally:
        os.close(fd)
    _write_json(path.with_suffix(".json"), {"shape": [n, 3, size, size], "bad": bad})
    try:
        os.replace(partial, path)
    except FileNotFoundError:  # another process building the same cache moved it into place first
        if not path.is_file():
            raise
    record.unlink(missing_ok=True)
    return bad


def _ok_mask(records, bad) -> np.ndarray:
    ok = np.ones(len(records), dtype=bool)
    idx = {r.image: i for i, r in enumerate(records)}
    for name, _ in bad:
        ok[idx[name]] = False
    return ok


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj).encode()))
