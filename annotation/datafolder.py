"""The engine's generic data folder, written from the portal: ``images/`` + ``labels.csv``.

The one writer of that format for every export (a training run's photos, the lesion crops), so each
row carries what training reads (``inference/ml/data.py``): the image, its label, its case (the
case-grouped split), the case's age, sex and body site (the metadata model) and the photo's
modality (dermoscopic or clinical). Callers may add columns of their own after these.

Public API: ``LABEL_COLUMNS``, ``photo_fields(photo) -> dict``, ``DataFolderWriter(folder, ...)``
(a directory) and ``DataFolderZipWriter(zip_file, prefix, ...)`` (a folder inside a zip archive);
both are context managers with ``add(...)``. On an error inside the ``with`` block the folder gets
no labels.csv and the images written so far are removed.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

LABEL_COLUMNS = ("image", "label", "case_id", "age", "sex", "site", "modality")


def photo_fields(photo) -> dict:
    """case_id, age, sex, site and modality of a photo: the columns training reads beside its label.
    The case is ``Case.reference``; age is at the photo's date; unknown fields are empty."""
    from .selectors import case_metadata

    meta = case_metadata(photo.case, when=photo.acquired_at or photo.created_at)
    return {
        "case_id": photo.case.reference,
        "age": meta.get("age", ""),
        "sex": meta.get("sex", ""),
        "site": meta.get("site", ""),
        "modality": photo.modality,
    }


class _Writer:
    def __init__(self, extra_columns=()):
        self.columns = [*LABEL_COLUMNS, *extra_columns]
        self._text = io.StringIO()
        self._csv = csv.DictWriter(self._text, fieldnames=self.columns, extrasaction="raise")
        self._csv.writeheader()
        self.count = 0

    def add(self, *, name: str, file, label: str, photo, **extra) -> None:
        """``file`` (a stored file field) as ``images/<name>``, labelled ``label``, with the case and
        metadata of ``photo`` and the caller's ``extra`` columns."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"image name {name!r}: a plain file name is expected")
        self._put_image(name, file)
        self._csv.writerow({"image": name, "label": label, **photo_fields(photo), **extra})
        self.count += 1

    def labels_csv(self) -> str:
        return self._text.getvalue()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._finish()
        else:
            self._discard()
        return False


class DataFolderWriter(_Writer):
    """Writes ``folder/images/<name>`` and, on a clean exit, ``folder/labels.csv``. ``link=True``
    symlinks each image to its stored file where the storage has local paths (a scratch folder
    for training), else the bytes are copied."""

    def __init__(self, folder, *, extra_columns=(), link: bool = False):
        super().__init__(extra_columns)
        self.folder = Path(folder)
        self.images = self.folder / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.link = link
        self._written: list[Path] = []

    def _put_image(self, name: str, file) -> None:
        target = self.images / name
        if target.exists() or target.is_symlink():
            target.unlink()
        self._written.append(target)
        if self.link:
            try:
                target.symlink_to(Path(file.path))
                return
            except (NotImplementedError, AttributeError, ValueError, OSError):
                pass
        with file.open("rb") as src:
            target.write_bytes(src.read())

    def _finish(self) -> None:
        tmp = self.folder / "labels.csv.partial"
        tmp.write_text(self.labels_csv(), encoding="utf-8", newline="")
        os.replace(tmp, self.folder / "labels.csv")

    def _discard(self) -> None:
        for p in self._written:
            p.unlink(missing_ok=True)


class DataFolderZipWriter(_Writer):
    """Writes ``<prefix>/images/<name>`` into the open ``zipfile.ZipFile`` and, on a clean exit,
    ``<prefix>/labels.csv`` (a zip cannot drop members: on an error the caller discards the archive)."""

    def __init__(self, zip_file, prefix: str, *, extra_columns=()):
        super().__init__(extra_columns)
        self.zip = zip_file
        self.prefix = prefix.strip("/")

    def _put_image(self, name: str, file) -> None:
        with file.open("rb") as src:
            self.zip.writestr(f"{self.prefix}/images/{name}", src.read())

    def _finish(self) -> None:
        self.zip.writestr(f"{self.prefix}/labels.csv", self.labels_csv())

    def _discard(self) -> None:
        pass
