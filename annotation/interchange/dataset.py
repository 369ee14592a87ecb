"""Import a labelled photo folder: HAM10000-style or generic.

HAM10000: metadata.csv (lesion_id, image_id, dx, dx_type, age, sex, localization) and
images/<image_id>.jpg. Generic: labels.csv (image, label, case_id[, source, modality, sex,
age, site]) and images/<image>. lesion_id/case_id -> case, dx/label -> sub-class, dx_type
histo -> confirmed histopathology, others -> their source.

Nothing is written until every row and every new photo has been checked (dataset_rows.py,
then each photo decoded once and dropped): any bad row is reported with its line number and
nothing is imported. The rows are then written in chunks of CHUNK_ROWS, each chunk its own
transaction, so an import that is interrupted (killed, a lost database) keeps its whole
chunks and a re-run resumes after them: present photos are recognised by (case, file name)
without reading the file. Memory holds the rows' index and one chunk of photos, whatever
the size of the folder.

Speed: each chunk is written with a handful of bulk INSERTs (a few queries per 200 rows
instead of ~20 per row). If a chunk's bulk write fails for any reason, its files are
removed and the chunk is imported again row by row through the services, where each
row is its own savepoint, so the row at fault is named.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.utils import timezone

from .. import services
from ..images import ImageRejected, clean_image, decode_checked
from ..models import (
    Case,
    CaseStatus,
    DiagnosisLabel,
    ImportRun,
    LabelChange,
    LabelSource,
    Modality,
    Patient,
    Photo,
    SubClass,
    Taxonomy,
)
from .dataset_rows import (
    ImportErrorFatal,
    ImportRejected,
    Row,
    detect,
    read_rows,
    validate_rows,
)

__all__ = ["ImportErrorFatal", "ImportRejected", "ImportSummary", "import_dataset"]


@dataclass
class ImportSummary:
    kind: str = ""
    rows: int = 0
    cases_created: int = 0
    photos_added: int = 0
    photos_existing: int = 0
    labels_added: int = 0
    labels_existing: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def text(self) -> str:
        lines = [
            f"{self.kind} import: {self.rows} rows in {self.seconds:.1f} s",
            f"  cases created  {self.cases_created}",
            f"  photos added   {self.photos_added} (already present {self.photos_existing})",
            f"  labels added   {self.labels_added} (already present {self.labels_existing})",
        ]
        return "\n".join(lines)


CHUNK_ROWS = 200


@dataclass
class _Known:
    """What is already in the database, read once per run and kept up to date."""

    cases: dict[str, int]
    names: set[tuple[int, str]]
    labels: dict[tuple[int, str], int]  # (case pk, source) -> sub-class pk


def import_dataset(
    folder: str | Path,
    *,
    user=None,
    taxonomy: Taxonomy | None = None,
    modality: str | None = None,
    patient_prefix: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    bulk: bool = True,
) -> ImportSummary:
    """Check every row and new photo, then write them chunk by chunk; ImportRejected lists every
    bad row (a photo that cannot be decoded included) with its line number, and nothing is written.
    ``progress(stage, done, total)`` with stage "check", then "write"."""
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
    rows, n_header = read_rows(kind, csv_path)
    total = len(rows)

    # What is already there, read once, so a re-run reads no image at all.
    known = _Known(
        cases=dict(Case.objects.exclude(external_id="").values_list("external_id", "pk")),
        names=set(Photo.objects.values_list("case_id", "original_name")),
        labels={(c, s): sub for c, s, sub in DiagnosisLabel.objects.values_list("case_id", "source", "sub_class_id")},
    )
    ext_of = {pk: ext for ext, pk in known.cases.items()}
    codes = dict(SubClass.objects.values_list("pk", "code"))
    existing = {(ext_of[c], s): (sub, codes.get(sub, "?")) for (c, s), sub in known.labels.items() if c in ext_of}
    parsed, problems = validate_rows(
        kind,
        rows,
        csv_name=csv_path.name,
        n_header=n_header,
        subs=subs,
        taxonomy=taxonomy,
        modality=modality,
        prefix=prefix,
        images_dir=images_dir,
        existing_labels=existing,
    )
    bad: dict[int, str] = problems

    def report(line: int, message: str) -> None:
        bad[line] = f"{csv_path.name} line {line}: {message}"

    def refuse() -> ImportRejected:
        return ImportRejected(csv_path.name, [bad[line] for line in sorted(bad)])

    _check_new_photos(parsed, known, report, progress)
    if bad:
        raise refuse()

    for chunk_start in range(0, len(parsed), CHUNK_ROWS):
        chunk = parsed[chunk_start : chunk_start + CHUNK_ROWS]
        _write_chunk(chunk, known, summary, user=user, csv_name=csv_path.name, bad=bad, report=report, bulk=bulk)
        if bad:  # the database refused a row the checks let through: this chunk was rolled back
            raise refuse()
        if progress:
            progress("write", min(total, chunk_start + CHUNK_ROWS), total)
    summary.rows = total
    summary.seconds = time.monotonic() - started
    ImportRun.objects.create(
        path=folder.name, kind=kind, summary=summary.as_dict(), started_by=user, finished_at=timezone.now()
    )
    return summary


def _check_new_photos(parsed: list[Row], known: _Known, report, progress) -> None:
    """Decode every photo not yet in the database once (pixels dropped at once), reporting the
    rows whose photo cannot be read or is refused, before anything is written."""
    for k, r in enumerate(parsed, 1):
        if not _is_present(r, known):
            try:
                decode_checked(r.path.read_bytes(), r.path.name)[0].close()
            except ImageRejected as exc:
                report(r.line, str(exc))
            except OSError as exc:
                report(r.line, f"{r.path.name}: cannot be read ({exc.strerror or exc})")
        if progress and (k % CHUNK_ROWS == 0 or k == len(parsed)):
            progress("check", k, len(parsed))


def _is_present(r: Row, known: _Known) -> bool:
    case_pk = known.cases.get(r.external_id)
    return case_pk is not None and (case_pk, r.path.name) in known.names


class _ChunkRefused(Exception):
    """A row of the chunk was refused while writing: roll the chunk back."""


def _write_chunk(chunk: list[Row], known: _Known, summary: ImportSummary, *, user, csv_name, bad, report, bulk) -> None:
    """One chunk in one transaction: bulk INSERTs, or row by row (each row a savepoint naming
    the row at fault). A chunk with a refused row is rolled back with the files it stored."""
    written: list[str] = []
    try:
        with transaction.atomic():
            if bulk:
                ready = _decode_new_photos(chunk, known, report)
                if not bad:
                    try:
                        _write_chunk_bulk(ready, known, summary, user=user, csv_name=csv_name, written=written)
                    except Exception:  # anything at all: redo this chunk row by row, which names the bad row
                        for r in ready:
                            _import_row(r, known, summary, user=user, csv_name=csv_name, report=report, written=written)
            else:
                for r in chunk:
                    _import_row(r, known, summary, user=user, csv_name=csv_name, report=report, written=written)
            if bad:
                raise _ChunkRefused
    except BaseException as exc:
        for name in written:
            services.stored_file_delete(name, keep_if_referenced=True)
        if not isinstance(exc, _ChunkRefused):
            raise
    finally:
        for r in chunk:
            r.clean = None  # one chunk of photos in memory at a time


def _decode_new_photos(parsed: list[Row], known: _Known, report) -> list[Row]:
    """Decode and clean the photos not yet in the database; rows with a bad photo are
    reported and dropped (they then create nothing, as in the row-by-row path)."""
    ready = []
    for r in parsed:
        if not _is_present(r, known):
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


def _write_chunk_bulk(
    rows: list[Row], known: _Known, summary: ImportSummary, *, user, csv_name: str, written: list[str]
) -> None:
    """Write a chunk of validated rows with bulk INSERTs in one transaction. Same result
    as services.case_create / photo_attach / label_record row by row."""
    if not rows:
        return
    now = timezone.now()
    by = user if getattr(user, "pk", None) else None
    mine: list[str] = []
    counts = dict.fromkeys(("cases_created", "photos_added", "photos_existing", "labels_added", "labels_existing"), 0)
    try:
        with transaction.atomic():
            # Patients and cases for external ids not seen before (first row of a case wins).
            new_cases: dict[str, Row] = {}
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
                    Case(
                        patient_id=patients[r.patient_code],
                        external_id=ext,
                        body_site=r.site,
                        age_at_visit=r.age,
                        created_by=by,
                    )
                    for ext, r in new_cases.items()
                ]
                for c in cases:
                    c.full_clean(exclude=["patient"], validate_unique=False, validate_constraints=False)
                Case.objects.bulk_create(cases)
                case_pk.update({c.external_id: c.pk for c in cases})
                counts["cases_created"] = len(cases)

            # Photos: skip what the case already holds (same file name, or same pixels).
            old_case_ids = {case_pk[r.external_id] for r in rows if r.external_id in known.cases}
            shas = (
                set(Photo.objects.filter(case_id__in=old_case_ids).values_list("case_id", "sha256"))
                if old_case_ids
                else set()
            )
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
                    case_id=pk,
                    modality=r.modality,
                    width=r.clean.width,
                    height=r.clean.height,
                    sha256=r.clean.sha256,
                    original_name=r.path.name[:255],
                    uploaded_by=by,
                )
                photo.file.save(f"upload.{r.clean.extension}", ContentFile(r.clean.content), save=False)
                mine.append(photo.file.name)
                photos.append(photo)
            Photo.objects.bulk_create(photos)
            counts["photos_added"] = len(photos)

            # Labels (one per case and source) and their history rows.
            labels, changes, confirmed_cases, seen = [], [], set(), {}
            for r in rows:
                key = (case_pk[r.external_id], r.source)
                if key in known.labels or key in seen:
                    counts["labels_existing"] += 1
                    continue
                seen[key] = r.sub_class.pk
                confirmed = r.source == LabelSource.HISTOPATHOLOGY
                labels.append(
                    DiagnosisLabel(
                        case_id=key[0],
                        sub_class=r.sub_class,
                        source=r.source,
                        confirmed=confirmed,
                        signed_by=by,
                        signed_at=now,
                    )
                )
                changes.append(
                    LabelChange(
                        case_id=key[0],
                        source=r.source,
                        new_sub_class=r.sub_class,
                        changed_by=by,
                        note=f"imported from {csv_name} line {r.line}",
                    )
                )
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
        for name in mine:
            services.stored_file_delete(name, keep_if_referenced=True)
        raise
    written.extend(mine)
    for key, value in counts.items():
        setattr(summary, key, getattr(summary, key) + value)
    known.cases.update(case_pk)
    known.names.update(names)
    known.labels.update(seen)


def _import_row(
    r: Row, known: _Known, summary: ImportSummary, *, user, csv_name: str, report, written: list[str]
) -> None:
    """One row through the services, in its own transaction: the slow, exact path."""
    stored = None
    counts = dict.fromkeys(("cases_created", "photos_added", "photos_existing", "labels_added", "labels_existing"), 0)
    try:
        with transaction.atomic():
            case_pk = known.cases.get(r.external_id)
            if case_pk is None:
                case = services.case_create(
                    patient_code=r.patient_code,
                    sex=r.sex,
                    body_site=r.site,
                    age_at_visit=r.age,
                    external_id=r.external_id,
                    created_by=user,
                    validate_constraints=False,
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
                        case=case,
                        data=r.path.read_bytes(),
                        filename=r.path.name,
                        uploaded_by=user,
                        modality=r.modality,
                        run_hooks=False,
                    )
                    counts["photos_added"] += 1
                except services.DuplicatePhoto:
                    counts["photos_existing"] += 1
            if (case_pk, r.source) in known.labels:
                counts["labels_existing"] += 1
            else:
                services.label_record(
                    case=case if case.patient_id else Case.objects.get(pk=case_pk),
                    sub_class=r.sub_class,
                    source=r.source,
                    by=user,
                    note=f"imported from {csv_name} line {r.line}",
                    check_permissions=False,
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
    if stored is not None:
        written.append(stored.file.name)
    for key, value in counts.items():
        setattr(summary, key, getattr(summary, key) + value)
    known.names.add((case_pk, r.path.name))
    known.labels[(case_pk, r.source)] = r.sub_class.pk
    known.cases[r.external_id] = case_pk


def _forget(stored: Photo | None) -> None:
    """Remove the file of a photo whose row was rolled back."""
    if stored is not None:
        services.stored_file_delete(stored.file.name, keep_if_referenced=True)
