"""import_dataset on small generated folders: HAM10000-style and generic."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from annotation import services
from annotation.interchange import dataset as importers
from annotation.interchange.dataset import ImportErrorFatal, ImportRejected, import_dataset
from annotation.models import Case, DiagnosisLabel, ImportRun, LabelChange, Photo
from tests.factories import image_bytes

HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"


def media_files() -> int:
    root = Path(settings.MEDIA_ROOT)
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def _write_images(folder: Path, names: dict[str, bytes]) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, data in names.items():
        (folder / "images" / name).write_bytes(data)


def _colour(i: int) -> tuple[int, int, int]:
    return (20 + 7 * i, 200 - 5 * i, 90 + 3 * i)


@pytest.fixture
def ham_folder(tmp_path) -> Path:
    folder = tmp_path / "ham"
    good = {f"ISIC_{i}.jpg": image_bytes("JPEG", size=(60, 45), color=_colour(i)) for i in range(1, 6)}
    good["ISIC_7.jpg"] = b"\xff\xd8\xff\xe0 this JPEG stops here"
    good.update({f"ISIC_{i}.jpg": image_bytes("JPEG", size=(60, 45), color=_colour(i)) for i in (6, 8, 9, 10, 11)})
    _write_images(folder, good)
    rows = [
        HAM_HEADER,
        "HAM_A,ISIC_1,nv,histo,45.0,male,back",  # line 2
        "HAM_A,ISIC_2,nv,histo,45.0,male,back",  # line 3: second photo of the same lesion
        "HAM_B,ISIC_3,mel,follow_up,60.0,female,face",  # line 4
        "HAM_C,ISIC_4,bkl,consensus,,unknown,trunk",  # line 5
        "HAM_D,ISIC_5,bcc,confocal,70,male,scalp",  # line 6
    ]
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def ham_bad_folder(ham_folder) -> Path:
    """ham_folder with seven bad rows after its five good ones."""
    rows = [
        "HAM_E,ISIC_6,xyz,histo,50,male,back",  # line 7: unknown label
        "HAM_F,ISIC_404,nv,histo,50,male,back",  # line 8: missing image
        "HAM_G,ISIC_7,nv,histo,50,male,back",  # line 9: corrupt image
        "HAM_H,ISIC_8,nv,histo,forty,male,back",  # line 10: bad age
        "HAM_I,ISIC_9,nv,guesswork,50,male,back",  # line 11: unknown source
        "HAM_J,ISIC_10,nv,histo,-5,male,back",  # line 12: negative age
        "HAM_K,ISIC_11,nv,histo,inf,male,back",  # line 13: infinite age
    ]
    with (ham_folder / "metadata.csv").open("a") as fh:
        fh.write("\n".join(rows) + "\n")
    return ham_folder


EXPECTED_BAD = {
    7: "label 'xyz' is not a sub-class",
    8: "images/ISIC_404 not found",
    9: "ISIC_7.jpg: ",
    10: "age 'forty' is not a number",
    11: "unknown label source 'guesswork'",
    12: "age '-5' is outside 0-130",
    13: "age 'inf' is not a number",
}


@pytest.mark.django_db
def test_bad_rows_are_all_reported_and_nothing_is_imported(ham_bad_folder, taxonomy):
    files_before = media_files()
    with pytest.raises(ImportRejected) as exc:
        import_dataset(ham_bad_folder)
    problems = exc.value.problems
    assert len(problems) == len(EXPECTED_BAD)
    for line, fragment in EXPECTED_BAD.items():
        matching = [b for b in problems if b.startswith(f"metadata.csv line {line}: ")]
        assert len(matching) == 1 and fragment in matching[0], (line, problems)
    assert "corrupt" in next(b for b in problems if "line 9:" in b)
    assert str(exc.value).startswith("metadata.csv: 7 bad row(s); nothing was imported.")
    assert not Case.objects.exists() and not Photo.objects.exists() and not ImportRun.objects.exists()
    assert media_files() == files_before


@pytest.mark.django_db
def test_ham_import_creates_cases_photos_labels(ham_folder, taxonomy):
    files_before = media_files()
    summary = import_dataset(ham_folder)

    assert summary.kind == "ham10000" and summary.rows == 5
    assert (summary.cases_created, summary.photos_added, summary.labels_added) == (4, 5, 4)
    assert summary.labels_existing == 1  # the second photo of HAM_A shares its label

    a = Case.objects.get(external_id="HAM_A")
    assert a.photos.count() == 2 and a.patient.code == "HAM-HAM_A" and a.patient.sex == "male"
    assert a.age_at_visit == 45 and a.body_site == "back"
    assert {p.modality for p in Photo.objects.all()} == {"dermoscopic"}
    label = a.labels.get()
    assert (label.sub_class.code, label.source, label.confirmed) == ("nv", "histopathology", True)
    assert a.status == "confirmed"
    expected_sources = {"HAM_B": ("mel", "follow_up"), "HAM_C": ("bkl", "consensus"), "HAM_D": ("bcc", "confocal")}
    for lesion, (code, source) in expected_sources.items():
        case = Case.objects.get(external_id=lesion)
        lab = case.labels.get()
        assert (lab.sub_class.code, lab.source, lab.confirmed) == (code, source, False)
        assert case.status == "open"
    assert Case.objects.get(external_id="HAM_C").age_at_visit is None
    assert LabelChange.objects.filter(note__startswith="imported from metadata.csv line").count() == 4
    assert media_files() == files_before + 5
    assert ImportRun.objects.get().summary["photos_added"] == 5


@pytest.mark.django_db
def test_second_run_adds_nothing_and_reads_no_image(ham_folder, taxonomy, monkeypatch):
    import_dataset(ham_folder)
    counts = (Case.objects.count(), Photo.objects.count(), DiagnosisLabel.objects.count(), LabelChange.objects.count())
    files = media_files()

    decoded = []
    real_clean = importers.clean_image

    def spy(data, filename):
        decoded.append(filename)
        return real_clean(data, filename)

    monkeypatch.setattr(importers, "clean_image", spy)
    again = import_dataset(ham_folder)
    assert (again.cases_created, again.photos_added, again.labels_added) == (0, 0, 0)
    assert again.photos_existing == 5 and again.labels_existing == 5
    assert decoded == []  # present photos are not re-read
    assert (
        Case.objects.count(),
        Photo.objects.count(),
        DiagnosisLabel.objects.count(),
        LabelChange.objects.count(),
    ) == counts
    assert media_files() == files


@pytest.mark.django_db
def test_fixed_rows_import_on_the_next_run(ham_bad_folder, taxonomy):
    with pytest.raises(ImportRejected):
        import_dataset(ham_bad_folder)
    lines = (ham_bad_folder / "metadata.csv").read_text().splitlines()
    fixed = lines[:6] + ["HAM_H,ISIC_8,nv,histo,40,male,back"]
    (ham_bad_folder / "metadata.csv").write_text("\n".join(fixed) + "\n")
    again = import_dataset(ham_bad_folder)
    assert (again.cases_created, again.photos_added, again.labels_added) == (5, 6, 5)
    assert Case.objects.get(external_id="HAM_H").age_at_visit == 40


@pytest.mark.django_db
def test_a_row_failing_after_its_photo_was_written_leaves_no_file(ham_folder, taxonomy, monkeypatch):
    real = services.label_record

    def flaky(**kwargs):
        if kwargs["case"].external_id == "HAM_B":
            raise ValueError("label store unavailable")
        return real(**kwargs)

    monkeypatch.setattr(importers.services, "label_record", flaky)
    before = media_files()
    with pytest.raises(ImportRejected) as exc:
        import_dataset(ham_folder, bulk=False)  # the row-by-row path
    assert exc.value.problems == ["metadata.csv line 4: label store unavailable"]
    assert not Case.objects.exists() and media_files() == before  # the photos of the other rows are gone too
    # and everything imports on the next run
    monkeypatch.setattr(importers.services, "label_record", real)
    again = import_dataset(ham_folder)
    assert (again.cases_created, again.photos_added, again.labels_added) == (4, 5, 4)


@pytest.mark.django_db
def test_bulk_and_row_by_row_paths_give_the_same_result(ham_folder, tmp_path, taxonomy):
    import shutil

    def snapshot():
        return sorted(
            (
                c.external_id,
                c.patient.code,
                c.patient.sex,
                c.age_at_visit,
                c.body_site,
                c.status,
                tuple(sorted(c.photos.values_list("original_name", "sha256", "width", "height", "modality"))),
                tuple(sorted(c.labels.values_list("sub_class__code", "source", "confirmed"))),
                tuple(sorted(c.label_changes.values_list("source", "new_sub_class__code", "note"))),
            )
            for c in Case.objects.select_related("patient")
        )

    fast = import_dataset(ham_folder)
    fast_state = snapshot()
    Case.objects.all().delete()
    from annotation.models import Patient

    Patient.objects.all().delete()
    copy = tmp_path / "again"
    shutil.copytree(ham_folder, copy)
    slow = import_dataset(copy, bulk=False)
    assert snapshot() == fast_state
    assert fast.as_dict() | {"seconds": 0} == slow.as_dict() | {"seconds": 0}


@pytest.mark.django_db
def test_a_failing_bulk_write_falls_back_to_rows_and_leaves_no_orphan_file(ham_folder, taxonomy, monkeypatch):
    from django.db import IntegrityError

    def broken_bulk_create(*args, **kwargs):
        raise IntegrityError("simulated failure after the photos were written")

    monkeypatch.setattr(LabelChange.objects, "bulk_create", broken_bulk_create)
    before = media_files()
    summary = import_dataset(ham_folder)
    assert (summary.cases_created, summary.photos_added, summary.labels_added) == (4, 5, 4)
    assert media_files() == before + 5  # the files of the failed bulk attempt were removed
    assert LabelChange.objects.count() == 4


@pytest.fixture
def generic_folder(tmp_path) -> Path:
    folder = tmp_path / "generic"
    _write_images(
        folder,
        {
            "a1.png": image_bytes("PNG", color=(1, 100, 200)),
            "a2.jpg": image_bytes("JPEG", color=(50, 60, 70)),
            "b1.webp": image_bytes("WEBP", color=(200, 10, 10)),
            "c1.jpg": image_bytes("JPEG", color=(9, 99, 199)),
            "d1.jpg": image_bytes("JPEG", color=(19, 199, 99)),
            "e1.gif": image_bytes("GIF", color=(1, 2, 3)),
        },
    )
    (folder / "labels.csv").write_text(
        "image,label,case_id,source,modality\n"
        "a1.png,bcc,1001,histopathology,clinical\n"  # 2
        "a2.jpg,bcc,1001,histopathology,dermoscopic\n"  # 3
        "b1.webp,df,1002,,clinical\n"  # 4: no source -> clinical impression
        "c1.jpg,vasc,1003,follow_up,\n"  # 5: no modality -> clinical
    )
    return folder


@pytest.fixture
def generic_bad_folder(generic_folder) -> Path:
    with (generic_folder / "labels.csv").open("a") as fh:
        fh.write(
            "d1.jpg,nv,1004,clinical,xray\n"  # 6: unknown modality
            "e1.gif,nv,1005,clinical,clinical\n"  # 7: GIF refused
            "missing.jpg,nv,1006,consensus,clinical\n"  # 8
            ",nv,1007,consensus,clinical\n"  # 9: empty image name
        )
    return generic_folder


@pytest.mark.django_db
def test_generic_bad_rows(generic_bad_folder, taxonomy):
    with pytest.raises(ImportRejected) as exc:
        import_dataset(generic_bad_folder)
    bad = {int(b.split(" line ")[1].split(":")[0]): b for b in exc.value.problems}
    assert sorted(bad) == [6, 7, 8, 9]
    assert "unknown modality 'xray'" in bad[6]
    assert "GIF images are not accepted" in bad[7]
    assert "images/missing.jpg not found" in bad[8]
    assert "empty case id or image name" in bad[9]
    assert not Case.objects.exists()


@pytest.mark.django_db
def test_generic_import(generic_folder, taxonomy):
    summary = import_dataset(generic_folder)
    assert summary.kind == "generic"
    assert (summary.cases_created, summary.photos_added, summary.labels_added) == (3, 4, 3)

    c1 = Case.objects.get(external_id="P:1001")
    assert c1.patient.code == "P-1001"
    assert sorted(c1.photos.values_list("modality", flat=True)) == ["clinical", "dermoscopic"]
    assert c1.labels.get().confirmed and c1.status == "confirmed"
    c2 = Case.objects.get(external_id="P:1002").labels.get()
    assert (c2.sub_class.code, c2.source, c2.confirmed) == ("df", "clinical", False)
    assert Case.objects.get(external_id="P:1003").labels.get().source == "follow_up"
    again = import_dataset(generic_folder)
    assert (again.cases_created, again.photos_added, again.labels_added) == (0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "csv_name, header, missing",
    [("metadata.csv", "lesion_id,image_id,dx_type,age", "dx"), ("labels.csv", "image,label,source", "case_id")],
)
def test_missing_column_is_a_clear_fatal_error(tmp_path, taxonomy, csv_name, header, missing):
    (tmp_path / csv_name).write_text(header + "\nx,y,z,w\n")
    with pytest.raises(ImportErrorFatal, match=rf"{csv_name}: missing column\(s\) {missing}"):
        import_dataset(tmp_path)
    with pytest.raises(CommandError, match=rf"missing column\(s\) {missing}"):
        call_command("import_dataset", str(tmp_path), "--no-progress")
    assert not Case.objects.exists()


@pytest.mark.django_db
def test_folder_without_csv_is_fatal(tmp_path, taxonomy):
    with pytest.raises(CommandError, match="neither metadata.csv"):
        call_command("import_dataset", str(tmp_path), "--no-progress")


@pytest.mark.django_db
def test_command_prints_summary(ham_folder, taxonomy, capsys):
    out = io.StringIO()
    call_command("import_dataset", str(ham_folder), stdout=out)
    text = out.getvalue()
    assert "ham10000 import: 5 rows" in text
    assert "cases created  4" in text and "photos added   5" in text
    assert "5/5" in capsys.readouterr().err  # the tqdm progress bar


@pytest.mark.django_db
def test_command_lists_every_bad_row(ham_bad_folder, taxonomy):
    with pytest.raises(CommandError) as exc:
        call_command("import_dataset", str(ham_bad_folder), "--no-progress")
    assert "nothing was imported" in str(exc.value)
    assert all(f"metadata.csv line {line}:" in str(exc.value) for line in EXPECTED_BAD)


@pytest.mark.django_db
def test_an_unexpected_crash_stops_the_import_and_leaves_no_orphan_file(ham_folder, taxonomy, monkeypatch):
    real = services.label_record

    def crash(**kwargs):
        if kwargs["case"].external_id == "HAM_C":
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(importers.services, "label_record", crash)
    before = media_files()
    with pytest.raises(RuntimeError, match="disk full"):
        import_dataset(ham_folder, bulk=False)
    # all or nothing: the rows before the crash are rolled back too, and their files removed
    assert not Case.objects.exists() and media_files() == before


@pytest.mark.django_db
def test_an_interrupted_import_keeps_its_whole_chunks_and_a_rerun_resumes(ham_folder, taxonomy, monkeypatch):
    """Chunks of two rows: the process dies while writing the second chunk; the first chunk
    stays, the second leaves nothing (rows nor files), and the next run adds only the rest."""
    monkeypatch.setattr(importers, "CHUNK_ROWS", 2)
    real = importers._write_chunk_bulk
    calls = []

    def dies_on_second(rows, *args, **kwargs):
        calls.append([r.external_id for r in rows])
        if len(calls) == 2:
            real(rows, *args, **kwargs)  # written, then the process is killed before the commit
            raise KeyboardInterrupt
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(importers, "_write_chunk_bulk", dies_on_second)
    before = media_files()
    with pytest.raises(KeyboardInterrupt):
        import_dataset(ham_folder)
    assert set(Case.objects.values_list("external_id", flat=True)) == {"HAM_A"}
    assert Photo.objects.count() == 2 and media_files() == before + 2  # the second chunk's files are gone
    assert not ImportRun.objects.exists()  # the run is not recorded as finished

    monkeypatch.setattr(importers, "_write_chunk_bulk", real)
    read, real_decode = [], importers.decode_checked
    monkeypatch.setattr(importers, "decode_checked", lambda data, name: read.append(name) or real_decode(data, name))
    again = import_dataset(ham_folder)
    assert (again.cases_created, again.photos_added, again.photos_existing, again.labels_added) == (3, 3, 2, 3)
    assert sorted(read) == ["ISIC_3.jpg", "ISIC_4.jpg", "ISIC_5.jpg"]  # the imported photos are not read again
    assert Photo.objects.count() == 5 and media_files() == before + 5
    assert DiagnosisLabel.objects.count() == 4 and ImportRun.objects.count() == 1


@pytest.mark.django_db
def test_a_corrupt_photo_in_a_late_chunk_writes_nothing(ham_folder, taxonomy, monkeypatch):
    """Every photo is checked before the first chunk is written, so a bad photo on the last row
    leaves no row and no file although earlier chunks would have committed."""
    monkeypatch.setattr(importers, "CHUNK_ROWS", 1)
    (ham_folder / "images" / "ISIC_5.jpg").write_bytes(b"\xff\xd8\xff\xe0 this JPEG stops here")
    stages = []
    before = media_files()
    with pytest.raises(ImportRejected) as exc:
        import_dataset(ham_folder, progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert [p.split(":")[0] for p in exc.value.problems] == ["metadata.csv line 6"]
    assert not Case.objects.exists() and media_files() == before
    assert stages[-1] == ("check", 5, 5) and all(s == "check" for s, _, _ in stages)
