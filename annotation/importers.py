"""Import a labelled photo folder: HAM10000-style or generic.

HAM10000: metadata.csv (lesion_id, image_id, dx, dx_type, age, sex, localization) and
images/<image_id>.jpg. Generic: labels.csv (image, label, case_id[, source, modality, sex,
age, site]) and images/<image>. lesion_id/case_id -> case, dx/label -> sub-class, dx_type
histo -> confirmed histopathology, others -> their source.
Idempotent: a second run adds nothing. Bad rows are reported with their line number and
skipped; each row is its own transaction, so a bad row leaves nothing behind.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone

from . import services
from .images import ImageRejected
from .models import Case, DiagnosisLabel, ImportRun, LabelSource, Modality, Photo, SubClass, Taxonomy

SOURCE_MAP = {
    "histo": LabelSource.HISTOPATHOLOGY,
    "histopathology": LabelSource.HISTOPATHOLOGY,
    "follow_up": LabelSource.FOLLOW_UP,
    "followup": LabelSource.FOLLOW_UP,
    "consensus": LabelSource.CONSENSUS,
    "confocal": LabelSource.CONFOCAL,
    "clinical": LabelSource.CLINICAL,
    "clinical_impression": LabelSource.CLINICAL,
}
SEX_MAP = {"male": "male", "m": "male", "female": "female", "f": "female", "": "unknown", "unknown": "unknown"}


class ImportErrorFatal(ValueError):
    """The folder itself cannot be imported (no CSV, wrong columns)."""


@dataclass
class ImportSummary:
    kind: str = ""
    rows: int = 0
    cases_created: int = 0
    photos_added: int = 0
    photos_existing: int = 0
    labels_added: int = 0
    labels_existing: int = 0
    bad_rows: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def text(self) -> str:
        lines = [
            f"{self.kind} import: {self.rows} rows in {self.seconds:.1f} s",
            f"  cases created  {self.cases_created}",
            f"  photos added   {self.photos_added} (already present {self.photos_existing})",
            f"  labels added   {self.labels_added} (already present {self.labels_existing})",
            f"  bad rows       {len(self.bad_rows)}",
        ]
        lines += [f"    {b}" for b in self.bad_rows[:50]]
        if len(self.bad_rows) > 50:
            lines.append(f"    ... and {len(self.bad_rows) - 50} more")
        return "\n".join(lines)


def detect(folder: Path) -> tuple[str, Path]:
    if (folder / "metadata.csv").exists():
        return "ham10000", folder / "metadata.csv"
    if (folder / "labels.csv").exists():
        return "generic", folder / "labels.csv"
    raise ImportErrorFatal(f"{folder}: neither metadata.csv (HAM10000-style) nor labels.csv (generic) was found.")


CHUNK_ROWS = 200

REQUIRED = {"ham10000": ["lesion_id", "image_id", "dx"], "generic": ["image", "label", "case_id"]}


def _find_image(images_dir: Path, name: str) -> Path | None:
    p = images_dir / name
    if p.suffix and p.exists():
        return p
    for ext in (".jpg", ".jpeg", ".png", ".webp", ".JPG", ".PNG"):
        cand = images_dir / f"{name}{ext}"
        if cand.exists():
            return cand
    return p if p.exists() else None


def import_dataset(
    folder: str | Path,
    *,
    user=None,
    taxonomy: Taxonomy | None = None,
    modality: str | None = None,
    patient_prefix: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    folder = Path(folder)
    kind, csv_path = detect(folder)
    images_dir = folder / "images"
    taxonomy = taxonomy or Taxonomy.objects.filter(is_default=True).first()
    if taxonomy is None:
        raise ImportErrorFatal("No taxonomy is loaded; run `python manage.py load_taxonomy` first.")
    subs = {s.code: s for s in SubClass.objects.filter(taxonomy=taxonomy)}
    modality = modality or (Modality.DERMOSCOPIC if kind == "ham10000" else None)
    prefix = patient_prefix if patient_prefix is not None else ("HAM" if kind == "ham10000" else "P")
    started = time.monotonic()
    summary = ImportSummary(kind=kind)

    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED[kind] if c not in (reader.fieldnames or [])]
        if missing:
            raise ImportErrorFatal(f"{csv_path.name}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}.")
        rows = list(reader)
    total = len(rows)

    # What is already there, read once, so a re-run costs reading files' hashes only.
    existing_cases = dict(Case.objects.exclude(external_id="").values_list("external_id", "pk"))
    existing_names = set(Photo.objects.values_list("case_id", "original_name"))
    existing_labels = set(DiagnosisLabel.objects.values_list("case_id", "source"))

    # Rows are committed in chunks (one COMMIT per chunk, not per row); each row is still
    # its own savepoint, so a bad row rolls back alone. Files written in a chunk that fails
    # as a whole are removed before the error propagates.
    for chunk_start in range(0, total, CHUNK_ROWS):
        chunk_files: list[str] = []
        try:
            with transaction.atomic():
                for index, row in enumerate(rows[chunk_start : chunk_start + CHUNK_ROWS], start=chunk_start + 2):
                    summary.rows += 1
                    try:
                        if kind == "ham10000":
                            case_key, image_name, label = row["lesion_id"].strip(), row["image_id"].strip(), row["dx"].strip()
                            source_raw = (row.get("dx_type") or "").strip().lower()
                            site = (row.get("localization") or "").strip()
                            sex = SEX_MAP.get((row.get("sex") or "").strip().lower(), "unknown")
                            age_raw = (row.get("age") or "").strip()
                            row_modality = modality
                        else:
                            case_key, image_name, label = row["case_id"].strip(), row["image"].strip(), row["label"].strip()
                            source_raw = (row.get("source") or "clinical").strip().lower()
                            site = (row.get("site") or row.get("body_site") or "").strip()
                            sex = SEX_MAP.get((row.get("sex") or "").strip().lower(), "unknown")
                            age_raw = (row.get("age") or "").strip()
                            row_modality = modality or (row.get("modality") or Modality.CLINICAL).strip().lower()
                        if not case_key or not image_name:
                            raise ValueError("empty case id or image name")
                        if label not in subs:
                            raise ValueError(f"label {label!r} is not a sub-class of {taxonomy}")
                        source = SOURCE_MAP.get(source_raw)
                        if source is None:
                            raise ValueError(f"unknown label source {source_raw!r} (expected one of {', '.join(sorted(SOURCE_MAP))})")
                        if row_modality not in Modality.values:
                            raise ValueError(f"unknown modality {row_modality!r}")
                        try:
                            age = int(float(age_raw)) if age_raw else None
                        except (ValueError, OverflowError):
                            raise ValueError(f"age {age_raw!r} is not a number")
                        if age is not None and not 0 <= age <= 130:
                            raise ValueError(f"age {age_raw!r} is outside 0-130")
                        path = _find_image(images_dir, image_name)
                        if path is None:
                            raise ValueError(f"image file images/{image_name} not found")
                        external_id = f"{prefix}:{case_key}" if kind == "generic" else case_key

                        # One savepoint per row; the counters and caches change only once it is released,
                        # and a file written for a row that rolled back is removed again.
                        stored = None
                        counts = {"cases_created": 0, "photos_added": 0, "photos_existing": 0, "labels_added": 0, "labels_existing": 0}
                        try:
                            with transaction.atomic():
                                case_pk = existing_cases.get(external_id)
                                if case_pk is None:
                                    case = services.case_create(
                                        patient_code=f"{prefix}-{case_key}", sex=sex, body_site=site, age_at_visit=age,
                                        external_id=external_id, created_by=user, validate_constraints=False,
                                    )
                                    case_pk = case.pk
                                    counts["cases_created"] += 1
                                else:
                                    case = Case(pk=case_pk)
                                if (case_pk, path.name) in existing_names:
                                    counts["photos_existing"] += 1
                                else:
                                    try:
                                        stored = services.photo_attach(
                                            case=case, data=path.read_bytes(), filename=path.name, uploaded_by=user,
                                            modality=row_modality, run_hooks=False,
                                        )
                                        chunk_files.append(stored.file.name)
                                        counts["photos_added"] += 1
                                    except services.DuplicatePhoto:
                                        counts["photos_existing"] += 1
                                if (case_pk, source) in existing_labels:
                                    counts["labels_existing"] += 1
                                else:
                                    services.label_record(
                                        case=case if case.patient_id else Case.objects.get(pk=case_pk), sub_class=subs[label], source=source, by=user,
                                        note=f"imported from {csv_path.name} line {index}", check_permissions=False,
                                    )
                                    counts["labels_added"] += 1
                        except BaseException:
                            if stored is not None:
                                services._delete_stored(stored.file.name, keep_if_referenced=True)
                            raise
                        for key, value in counts.items():
                            setattr(summary, key, getattr(summary, key) + value)
                        existing_names.add((case_pk, path.name))
                        existing_labels.add((case_pk, source))
                        existing_cases[external_id] = case_pk
                    except ImageRejected as exc:
                        summary.bad_rows.append(f"{csv_path.name} line {index}: {exc}")
                    except (ValueError, KeyError) as exc:
                        summary.bad_rows.append(f"{csv_path.name} line {index}: {exc}")
                    except ValidationError as exc:
                        summary.bad_rows.append(f"{csv_path.name} line {index}: {'; '.join(exc.messages)}")
                    except DatabaseError as exc:
                        summary.bad_rows.append(f"{csv_path.name} line {index}: rejected by the database ({str(exc).strip().splitlines()[0]})")
                    if progress:
                        progress(summary.rows, total)
        except BaseException:
            for name in chunk_files:
                services._delete_stored(name, keep_if_referenced=True)
            raise
    summary.seconds = time.monotonic() - started
    ImportRun.objects.create(path=folder.name, kind=kind, summary=summary.as_dict(), started_by=user, finished_at=timezone.now())
    return summary
