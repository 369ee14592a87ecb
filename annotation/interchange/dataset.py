"""Import a labelled photo folder: HAM10000-style or generic.

HAM10000: metadata.csv (lesion_id, image_id, dx, dx_type, age, sex, localization) and
images/<image_id>.jpg. Generic: labels.csv (image, label, case_id[, source, modality, sex,
age, site]) and images/<image>. lesion_id/case_id -> case, dx/label -> sub-class, dx_type
histo -> confirmed histopathology, others -> their source.
Idempotent: a second run adds nothing (present photos are recognised by (case, file name)
without reading the file). Bad rows are reported with their line number and skipped.

Speed: rows are validated and their photos decoded first, then each chunk of rows is
written with a handful of bulk INSERTs in one transaction (a few queries per 200 rows
instead of ~20 per row). If a chunk's bulk write fails for any reason, its files are
removed and the chunk is imported again row by row through the services, where each
row is its own savepoint, so the row at fault is reported and the others land.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.utils import timezone

from .. import services
from ..images import CleanImage, ImageRejected, clean_image
from ..models import Case, CaseStatus, DiagnosisLabel, ImportRun, LabelChange, LabelSource, Modality, Patient, Photo, SubClass, Taxonomy

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


@dataclass
class _Row:
    line: int
    external_id: str
    patient_code: str
    sex: str
    site: str
    age: int | None
    path: Path
    modality: str
    sub_class: SubClass
    source: str
    clean: CleanImage | None = None


@dataclass
class _Known:
    """What is already in the database, read once per run and kept up to date."""

    cases: dict[str, int]
    names: set[tuple[int, str]]
    labels: set[tuple[int, str]]


def _parse_row(kind: str, row: dict, line: int, *, subs, taxonomy, modality, prefix, images_dir) -> _Row:
    """Validate one CSV row (no database, no image decoding); ValueError says what is wrong."""
    if kind == "ham10000":
        case_key, image_name, label = row["lesion_id"].strip(), row["image_id"].strip(), row["dx"].strip()
        source_raw = (row.get("dx_type") or "").strip().lower()
        site = (row.get("localization") or "").strip()
        row_modality = modality
    else:
        case_key, image_name, label = row["case_id"].strip(), row["image"].strip(), row["label"].strip()
        source_raw = (row.get("source") or "clinical").strip().lower()
        site = (row.get("site") or row.get("body_site") or "").strip()
        row_modality = modality or (row.get("modality") or Modality.CLINICAL).strip().lower()
    sex = SEX_MAP.get((row.get("sex") or "").strip().lower(), "unknown")
    age_raw = (row.get("age") or "").strip()
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
    return _Row(
        line=line,
        external_id=f"{prefix}:{case_key}" if kind == "generic" else case_key,
        patient_code=f"{prefix}-{case_key}",
        sex=sex,
        site=site,
        age=age,
        path=path,
        modality=row_modality,
        sub_class=subs[label],
        source=source,
    )


def import_dataset(
    folder: str | Path,
    *,
    user=None,
    taxonomy: Taxonomy | None = None,
    modality: str | None = None,
    patient_prefix: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    bulk: bool = True,
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

    # What is already there, read once, so a re-run reads no image at all.
    known = _Known(
        cases=dict(Case.objects.exclude(external_id="").values_list("external_id", "pk")),
        names=set(Photo.objects.values_list("case_id", "original_name")),
        labels=set(DiagnosisLabel.objects.values_list("case_id", "source")),
    )
    bad: dict[int, str] = {}

    def report(line: int, message: str) -> None:
        bad[line] = f"{csv_path.name} line {line}: {message}"

    for chunk_start in range(0, total, CHUNK_ROWS):
        parsed: list[_Row] = []
        for line, row in enumerate(rows[chunk_start : chunk_start + CHUNK_ROWS], start=chunk_start + 2):  # line 1: header
            try:
                parsed.append(
                    _parse_row(kind, row, line, subs=subs, taxonomy=taxonomy, modality=modality, prefix=prefix, images_dir=images_dir)
                )
            except (ValueError, KeyError) as exc:
                report(line, str(exc))
        if bulk:
            ready = _decode_new_photos(parsed, known, report)
            try:
                _write_chunk_bulk(ready, known, summary, user=user, csv_name=csv_path.name)
            except Exception:  # anything at all: redo this chunk row by row, which names the bad row
                for r in ready:
                    _import_row(r, known, summary, user=user, csv_name=csv_path.name, report=report)
        else:
            for r in parsed:
                _import_row(r, known, summary, user=user, csv_name=csv_path.name, report=report)
        summary.rows = min(total, chunk_start + CHUNK_ROWS)
        if progress:
            progress(summary.rows, total)
    summary.rows = total
    summary.bad_rows = [bad[line] for line in sorted(bad)]
    summary.seconds = time.monotonic() - started
    ImportRun.objects.create(path=folder.name, kind=kind, summary=summary.as_dict(), started_by=user, finished_at=timezone.now())
    return summary


def _decode_new_photos(parsed: list[_Row], known: _Known, report) -> list[_Row]:
    """Decode and clean the photos not yet in the database; rows with a bad photo are
    reported and dropped (they then create nothing, as in the row-by-row path)."""
    ready = []
    for r in parsed:
        case_pk = known.cases.get(r.external_id)
        if case_pk is None or (case_pk, r.path.name) not in known.names:
            try:
                r.clean = clean_image(r.path.read_bytes(), r.path.name)
            except ImageRejected as exc:
                report(r.line, str(exc))
                continue
            except OSError as exc:
                report(r.line, f"{r.path.name}: cannot be read ({exc.strerror or exc})")
                continue
        ready.append(r)
    return ready


def _write_chunk_bulk(rows: list[_Row], known: _Known, summary: ImportSummary, *, user, csv_name: str) -> None:
    """Write a chunk of validated rows with bulk INSERTs in one transaction. Same result
    as services.case_create / photo_attach / label_record row by row."""
    if not rows:
        return
    now = timezone.now()
    by = user if getattr(user, "pk", None) else None
    written: list[str] = []
    counts = dict.fromkeys(("cases_created", "photos_added", "photos_existing", "labels_added", "labels_existing"), 0)
    try:
        with transaction.atomic():
            # Patients and cases for external ids not seen before (first row of a case wins).
            new_cases: dict[str, _Row] = {}
            for r in rows:
                if r.external_id not in known.cases and r.external_id not in new_cases:
                    new_cases[r.external_id] = r
            case_pk = dict(known.cases)
            if new_cases:
                codes = {r.patient_code: r for r in new_cases.values()}
                patients = dict(Patient.objects.filter(code__in=list(codes)).values_list("code", "pk"))
                created = Patient.objects.bulk_create(
                    [Patient(code=code, sex=r.sex or "unknown") for code, r in codes.items() if code not in patients]
                )
                patients.update({p.code: p.pk for p in created})
                cases = [
                    Case(patient_id=patients[r.patient_code], external_id=ext, body_site=r.site, age_at_visit=r.age, created_by=by)
                    for ext, r in new_cases.items()
                ]
                for c in cases:
                    c.full_clean(exclude=["patient"], validate_unique=False, validate_constraints=False)
                Case.objects.bulk_create(cases)
                case_pk.update({c.external_id: c.pk for c in cases})
                counts["cases_created"] = len(cases)

            # Photos: skip what the case already holds (same file name, or same pixels).
            old_case_ids = {case_pk[r.external_id] for r in rows if r.external_id in known.cases}
            shas = set(Photo.objects.filter(case_id__in=old_case_ids).values_list("case_id", "sha256")) if old_case_ids else set()
            names = set()
            photos = []
            for r in rows:
                pk = case_pk[r.external_id]
                if (pk, r.path.name) in known.names or (pk, r.path.name) in names:
                    counts["photos_existing"] += 1
                    continue
                names.add((pk, r.path.name))
                if (pk, r.clean.sha256) in shas:
                    counts["photos_existing"] += 1
                    continue
                shas.add((pk, r.clean.sha256))
                photo = Photo(
                    case_id=pk, modality=r.modality, width=r.clean.width, height=r.clean.height, sha256=r.clean.sha256,
                    original_name=r.path.name[:255], uploaded_by=by,
                )
                photo.file.save(f"upload.{r.clean.extension}", ContentFile(r.clean.content), save=False)
                written.append(photo.file.name)
                photos.append(photo)
            Photo.objects.bulk_create(photos)
            counts["photos_added"] = len(photos)

            # Labels (one per case and source) and their history rows.
            labels, changes, confirmed_cases, seen = [], [], set(), set()
            for r in rows:
                key = (case_pk[r.external_id], r.source)
                if key in known.labels or key in seen:
                    counts["labels_existing"] += 1
                    continue
                seen.add(key)
                confirmed = r.source == LabelSource.HISTOPATHOLOGY
                labels.append(DiagnosisLabel(
                    case_id=key[0], sub_class=r.sub_class, source=r.source, confirmed=confirmed, signed_by=by, signed_at=now,
                ))
                changes.append(LabelChange(
                    case_id=key[0], source=r.source, new_sub_class=r.sub_class, changed_by=by,
                    note=f"imported from {csv_name} line {r.line}",
                ))
                if confirmed:
                    confirmed_cases.add(key[0])
            DiagnosisLabel.objects.bulk_create(labels)
            for label, change in zip(labels, changes):
                change.label_id = label.pk
            LabelChange.objects.bulk_create(changes)
            counts["labels_added"] = len(labels)
            if confirmed_cases:
                Case.objects.filter(pk__in=confirmed_cases).exclude(
                    status__in=[CaseStatus.EXCLUDED, CaseStatus.CONFIRMED]
                ).update(status=CaseStatus.CONFIRMED, updated_at=now)
    except BaseException:
        for name in written:
            services.stored_file_delete(name, keep_if_referenced=True)
        raise
    for key, value in counts.items():
        setattr(summary, key, getattr(summary, key) + value)
    known.cases.update(case_pk)
    known.names.update(names)
    known.labels.update(seen)


def _import_row(r: _Row, known: _Known, summary: ImportSummary, *, user, csv_name: str, report) -> None:
    """One row through the services, in its own transaction: the slow, exact path."""
    stored = None
    counts = dict.fromkeys(("cases_created", "photos_added", "photos_existing", "labels_added", "labels_existing"), 0)
    try:
        with transaction.atomic():
            case_pk = known.cases.get(r.external_id)
            if case_pk is None:
                case = services.case_create(
                    patient_code=r.patient_code, sex=r.sex, body_site=r.site, age_at_visit=r.age,
                    external_id=r.external_id, created_by=user, validate_constraints=False,
                )
                case_pk = case.pk
                counts["cases_created"] += 1
            else:
                case = Case(pk=case_pk)
            if (case_pk, r.path.name) in known.names:
                counts["photos_existing"] += 1
            else:
                try:
                    stored = services.photo_attach(
                        case=case, data=r.path.read_bytes(), filename=r.path.name, uploaded_by=user,
                        modality=r.modality, run_hooks=False,
                    )
                    counts["photos_added"] += 1
                except services.DuplicatePhoto:
                    counts["photos_existing"] += 1
            if (case_pk, r.source) in known.labels:
                counts["labels_existing"] += 1
            else:
                services.label_record(
                    case=case if case.patient_id else Case.objects.get(pk=case_pk), sub_class=r.sub_class, source=r.source,
                    by=user, note=f"imported from {csv_name} line {r.line}", check_permissions=False,
                )
                counts["labels_added"] += 1
    except ImageRejected as exc:
        report(r.line, str(exc))
        return
    except (ValueError, KeyError) as exc:
        _forget(stored)
        report(r.line, str(exc))
        return
    except ValidationError as exc:
        _forget(stored)
        report(r.line, "; ".join(exc.messages))
        return
    except DatabaseError as exc:
        _forget(stored)
        report(r.line, f"rejected by the database ({str(exc).strip().splitlines()[0]})")
        return
    except BaseException:
        _forget(stored)
        raise
    for key, value in counts.items():
        setattr(summary, key, getattr(summary, key) + value)
    known.names.add((case_pk, r.path.name))
    known.labels.add((case_pk, r.source))
    known.cases[r.external_id] = case_pk


def _forget(stored: Photo | None) -> None:
    """Remove the file of a photo whose row was rolled back."""
    if stored is not None:
        services.stored_file_delete(stored.file.name, keep_if_referenced=True)
