"""Reading and checking a labelled photo folder's CSV before anything is written: every
problem of every row is found first, with its line number, so an import is all or nothing."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..images import CleanImage
from ..models import LabelSource, Modality, SubClass, Taxonomy

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


REQUIRED = {"ham10000": ["lesion_id", "image_id", "dx"], "generic": ["image", "label", "case_id"]}


class ImportErrorFatal(ValueError):
    """The folder cannot be imported (no CSV, wrong columns, not UTF-8, or bad rows)."""


class ImportRejected(ImportErrorFatal):
    """Rows of the CSV are wrong; nothing was imported. `problems` lists every one."""

    def __init__(self, csv_name: str, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{csv_name}: {len(problems)} bad row(s); nothing was imported. "
            "Fix them and run the import again:\n  " + "\n  ".join(problems)
        )


def detect(folder: Path) -> tuple[str, Path]:
    if (folder / "metadata.csv").exists():
        return "ham10000", folder / "metadata.csv"
    if (folder / "labels.csv").exists():
        return "generic", folder / "labels.csv"
    raise ImportErrorFatal(f"{folder}: neither metadata.csv (HAM10000-style) nor labels.csv (generic) was found.")


def read_rows(kind: str, csv_path: Path) -> tuple[list[tuple[int, dict]], int]:
    """((line, row) of each CSV row, number of header fields); a file that is not UTF-8 or
    lacks a required column is fatal."""
    raw = csv_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportErrorFatal(
            f"{csv_path.name}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}, "
            "e.g. a Latin-1 export); save the file as UTF-8 and run the import again."
        )
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED[kind] if c not in (reader.fieldnames or [])]
    if missing:
        raise ImportErrorFatal(f"{csv_path.name}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}.")
    return [(reader.line_num, row) for row in reader], len(reader.fieldnames)


def _field_count_problem(row: dict, n_header: int) -> str | None:
    """csv.DictReader fills a short row with None and puts extra fields under the key None."""
    n = sum(1 for k, v in row.items() if k is not None and v is not None) + len(row.get(None) or [])
    if n != n_header:
        return f"{'short' if n < n_header else 'long'} row: {n} field(s), the header has {n_header}"
    return None


def _find_image(images_dir: Path, name: str) -> Path | None:
    """The image file `name` inside images_dir; a name that could leave the folder is refused."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(name).drive or ".." in posix.parts:
        raise ValueError(f"image name {name!r} points outside the images folder; give a file name inside images/")
    p = images_dir / posix
    found = None
    if p.suffix and p.is_file():
        found = p
    else:
        for ext in (".jpg", ".jpeg", ".png", ".webp", ".JPG", ".PNG"):
            cand = images_dir / f"{posix}{ext}"
            if cand.is_file():
                found = cand
                break
        else:
            found = p if p.is_file() else None
    if found is not None and not found.resolve().is_relative_to(images_dir.resolve()):
        raise ValueError(f"image {name!r} is a link to a file outside the images folder")
    return found


@dataclass
class Row:
    line: int
    external_id: str
    case_key: str
    patient_code: str
    sex: str
    site: str
    age: int | None
    path: Path
    modality: str
    sub_class: SubClass
    source: str
    clean: CleanImage | None = None


def parse_row(kind: str, row: dict, line: int, *, subs, taxonomy, modality, prefix, images_dir) -> Row:
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
    return Row(
        line=line,
        external_id=f"{prefix}:{case_key}" if kind == "generic" else case_key,
        case_key=case_key,
        patient_code=f"{prefix}-{case_key}",
        sex=sex,
        site=site,
        age=age,
        path=path,
        modality=row_modality,
        sub_class=subs[label],
        source=source,
    )


def validate_rows(
    kind: str,
    rows: list[tuple[int, dict]],
    *,
    csv_name: str,
    n_header: int,
    subs: dict[str, SubClass],
    taxonomy: Taxonomy,
    modality: str | None,
    prefix: str,
    images_dir: Path,
    existing_labels: dict[tuple[str, str], tuple[int, str]],
) -> tuple[list[Row], dict[int, str]]:
    """Check every row (no database writes, no image decoding) -> (good rows, {line: problem}).
    A problem names the file and line. Two rows giving one case different labels from the same source
    conflict, as does a row disagreeing with the label the portal already holds
    (existing_labels: (external id, source) -> (sub-class pk, code))."""
    parsed: list[Row] = []
    problems: dict[int, str] = {}
    first: dict[tuple[str, str], Row] = {}
    for line, row in rows:
        try:
            why = _field_count_problem(row, n_header)
            if why:
                raise ValueError(why)
            r = parse_row(
                kind, row, line, subs=subs, taxonomy=taxonomy, modality=modality, prefix=prefix, images_dir=images_dir
            )
            key = (r.external_id, r.source)
            if key in first and first[key].sub_class.pk != r.sub_class.pk:
                raise ValueError(
                    f"case {r.case_key!r} is labelled {first[key].sub_class.code!r} ({r.source}) on line "
                    f"{first[key].line} and {r.sub_class.code!r} here; one case has one label per source"
                )
            if key in existing_labels and existing_labels[key][0] != r.sub_class.pk:
                raise ValueError(
                    f"case {r.case_key!r} already has the {r.source} label {existing_labels[key][1]!r} in the "
                    f"portal; this row says {r.sub_class.code!r} (change it in the portal, not by import)"
                )
            first.setdefault(key, r)
            parsed.append(r)
        except (ValueError, KeyError) as exc:
            problems[line] = f"{csv_name} line {line}: {exc}"
    return parsed, problems
