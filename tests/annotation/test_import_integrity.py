"""import_dataset checks the whole file first: every bad row is named with its line, and a
file with any bad row imports nothing. Image names stay inside the folder's images/."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.interchange.dataset import (
    ImportErrorFatal,
    ImportRejected,
    import_dataset,
)
from annotation.models import Case, DiagnosisLabel, Photo
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db

HEADER = "image,label,case_id,source"


def folder_with(tmp_path: Path, rows: list[str], n_images: int = 6, header: str = HEADER) -> Path:
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    for i in range(n_images):
        (folder / "images" / f"im{i}.jpg").write_bytes(
            image_bytes("JPEG", size=(40, 30), color=(10 + 30 * i, 90, 200 - 20 * i))
        )
    (folder / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def test_conflicting_labels_for_one_case_are_refused(tmp_path, taxonomy):
    folder = folder_with(
        tmp_path,
        [
            "im0.jpg,mel,D1,histopathology",  # line 2
            "im1.jpg,nv,D1,histopathology",  # line 3: same case, same source, another label
            "im2.jpg,bcc,D2,clinical",  # line 4: fine
            "im3.jpg,nv,D1,follow_up",  # line 5: another source may differ
        ],
    )
    with pytest.raises(ImportRejected) as exc:
        import_dataset(folder)
    assert exc.value.problems == [
        "labels.csv line 3: case 'D1' is labelled 'mel' (histopathology) on line 2 and 'nv' here; one case has one label per source"
    ]
    assert not Case.objects.exists() and not Photo.objects.exists()


def test_a_row_disagreeing_with_the_portals_label_is_refused(tmp_path, taxonomy):
    folder = folder_with(tmp_path, ["im0.jpg,mel,D1,histopathology"])
    import_dataset(folder)
    (folder / "labels.csv").write_text(f"{HEADER}\nim2.jpg,bcc,D2,clinical\nim1.jpg,nv,D1,histopathology\n")
    with pytest.raises(
        ImportRejected,
        match=r"line 3: case 'D1' already has the histopathology label 'mel' in the portal; this row says 'nv'",
    ):
        import_dataset(folder)
    assert Photo.objects.count() == 1 and DiagnosisLabel.objects.get().sub_class.code == "mel"


def test_short_and_long_rows_are_named_and_nothing_is_imported(tmp_path, taxonomy):
    rows = [f"im{i % 6}.jpg,nv,C{i},clinical" for i in range(300)]  # lines 2-301
    rows.append("im0.jpg,nv")  # line 302: short row
    rows.append("im1.jpg,nv,C900,clinical,extra")  # line 303: one field too many
    folder = folder_with(tmp_path, rows)
    with pytest.raises(ImportRejected) as exc:
        import_dataset(folder)
    assert exc.value.problems == [
        "labels.csv line 302: short row: 2 field(s), the header has 4",
        "labels.csv line 303: long row: 5 field(s), the header has 4",
    ]
    assert not Case.objects.exists() and not Photo.objects.exists()


def test_unknown_labels_are_all_named(tmp_path, taxonomy):
    folder = folder_with(tmp_path, ["im0.jpg,nv,A,clinical", "im1.jpg,melanoma,B,clinical", "im2.jpg,xyz,C,clinical"])
    with pytest.raises(ImportRejected) as exc:
        import_dataset(folder)
    assert [p.split(":")[0] for p in exc.value.problems] == ["labels.csv line 3", "labels.csv line 4"]
    assert "label 'melanoma' is not a sub-class" in exc.value.problems[0]
    assert not Case.objects.exists()


def test_latin1_file_gets_a_clear_message_naming_it(tmp_path, taxonomy):
    folder = folder_with(tmp_path, [])
    (folder / "labels.csv").write_bytes(
        f"{HEADER}\nim0.jpg,nv,A,clinical\nim1.jpg,nv,Béatrice,clinical\n".encode("latin-1")
    )
    with pytest.raises(
        ImportErrorFatal,
        match=r"^labels\.csv: not UTF-8 text \(byte 0xe9 on line 3, e\.g\. a Latin-1 export\); save the file as UTF-8",
    ):
        import_dataset(folder)
    with pytest.raises(CommandError, match=r"labels\.csv: not UTF-8 text"):
        call_command("import_dataset", str(folder), "--no-progress")
    assert not Case.objects.exists()


@pytest.mark.parametrize("name", ["../outside.jpg", "images/../../outside.jpg", "..\\outside.jpg", "ABSOLUTE"])
def test_image_names_are_confined_to_the_images_folder(tmp_path, taxonomy, name):
    folder = folder_with(tmp_path, [])
    outside = tmp_path / "outside.jpg"  # a real image just outside the data folder
    outside.write_bytes(image_bytes("JPEG", size=(40, 30)))
    name = str(outside) if name == "ABSOLUTE" else name
    (folder / "labels.csv").write_text(f'{HEADER}\nim0.jpg,nv,A,clinical\n"{name}",nv,B,clinical\n')
    with pytest.raises(ImportRejected) as exc:
        import_dataset(folder)
    assert exc.value.problems == [
        f"labels.csv line 3: image name {name!r} points outside the images folder; give a file name inside images/"
    ]
    assert not Photo.objects.exists()


def test_a_link_out_of_the_images_folder_is_refused(tmp_path, taxonomy):
    folder = folder_with(tmp_path, [])
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(image_bytes("JPEG", size=(40, 30)))
    (folder / "images" / "innocent.jpg").symlink_to(outside)
    (folder / "labels.csv").write_text(f"{HEADER}\ninnocent.jpg,nv,B,clinical\n")
    with pytest.raises(
        ImportRejected, match="line 2: image 'innocent.jpg' is a link to a file outside the images folder"
    ):
        import_dataset(folder)
    assert not Photo.objects.exists()


def test_a_good_file_imports_whole(tmp_path, taxonomy):
    folder = folder_with(
        tmp_path, ["im0.jpg,mel,D1,histopathology", "im1.jpg,mel,D1,histopathology", "sub/../im2.jpg,nv,D2,clinical"]
    )
    with pytest.raises(ImportRejected):  # '..' anywhere is refused, even when it stays inside
        import_dataset(folder)
    (folder / "labels.csv").write_text(
        f"{HEADER}\nim0.jpg,mel,D1,histopathology\nim1.jpg,mel,D1,histopathology\nim2.jpg,nv,D2,clinical\n"
    )
    summary = import_dataset(folder)
    assert (summary.cases_created, summary.photos_added, summary.labels_added) == (2, 3, 2)
