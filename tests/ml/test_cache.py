"""The decoded-image cache on disk: the same rows as decoding in memory, read by index, resumable."""

import pickle

import numpy as np
import pytest
import torch

from inference.ml import cache
from inference.ml.cache import DiskImages, build_cache
from inference.ml.data import colour_constancy, load_image, read_dataset
from inference.ml.errors import TrainingCancelled

from .conftest import make_dataset


def test_corrupt_and_missing_images_reported_in_memory_and_on_disk(tmp_path):
    root = make_dataset(tmp_path / "d", n_per_class=3)
    recs, _ = read_dataset(root)
    (root / "images" / "img_0001.jpg").write_bytes(b"not a jpeg at all")
    (root / "images" / "img_0002.jpg").unlink()
    imgs, ok, bad = build_cache(recs, 24, None)
    names = dict(bad)
    assert set(names) == {"images/img_0001.jpg", "images/img_0002.jpg"}
    assert "not found" in names["images/img_0002.jpg"]
    assert ok.sum() == len(recs) - 2 and imgs.shape == (len(recs), 3, 24, 24)
    assert int(imgs[1].sum()) == 0 and int(imgs[2].sum()) == 0
    disk1, ok1, bad1 = build_cache(recs, 24, tmp_path / "c")  # built
    disk2, ok2, bad2 = build_cache(recs, 24, tmp_path / "c")  # reused: the report too
    assert isinstance(disk1, DiskImages) and disk1.shape == imgs.shape
    assert torch.equal(disk1[:], imgs) and torch.equal(disk2[:], imgs)
    assert (ok1 == ok).all() and (ok2 == ok).all() and [tuple(b) for b in bad1] == bad2 == bad
    assert sorted(f.name.split(".", 1)[1] for f in (tmp_path / "c").iterdir()) == ["json", "u8"]


def test_disk_images_index_like_a_tensor(tmp_path):
    recs, _ = read_dataset(make_dataset(tmp_path / "d", n_per_class=3))
    mem, _, _ = build_cache(recs, 16, None)
    disk, _, _ = build_cache(recs, 16, tmp_path / "c")
    idx = [7, 2, 3, 4, 11, 0]
    assert torch.equal(disk[torch.tensor(idx)], mem[torch.tensor(idx)])
    assert torch.equal(disk[np.array(idx)], mem[idx]) and torch.equal(disk[5], mem[5])
    assert torch.equal(disk[2:9:3], mem[2:9:3])
    mask = np.arange(len(recs)) % 3 == 0
    assert torch.equal(disk[mask], mem[torch.from_numpy(mask)])
    view = disk.take([9, 1, 4])  # nothing read yet
    assert len(view) == 3 and torch.equal(view[[2, 0]], mem[[4, 9]])
    again = pickle.loads(pickle.dumps(view))  # another process opens its own file
    assert torch.equal(again[:], mem[[9, 1, 4]])


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    recs, _ = read_dataset(make_dataset(tmp_path / "d", n_per_class=3))  # 12 photos
    monkeypatch.setattr(cache, "CHUNK", 4)
    seen = []
    stop = {"after": 1}

    def should_stop():
        stop["after"] -= 1
        return stop["after"] < 0

    with pytest.raises(TrainingCancelled):
        build_cache(recs, 20, tmp_path / "c", should_stop=should_stop, progress=lambda d, n: seen.append(d))
    assert seen == [0, 4]
    left = sorted(f.name.split(".", 1)[1] for f in (tmp_path / "c").iterdir())
    assert left == ["u8.partial", "u8.progress.json"]
    decoded = []
    real = cache.load_image
    monkeypatch.setattr(cache, "load_image", lambda p, *a: decoded.append(p) or real(p, *a))
    seen.clear()
    disk, ok, bad = build_cache(recs, 20, tmp_path / "c", progress=lambda d, n: seen.append(d))
    assert len(decoded) == 8 and seen == [4, 8, 12]  # only the rows not done before
    assert ok.all() and bad == []
    monkeypatch.setattr(cache, "load_image", real)
    mem, _, _ = build_cache(recs, 20, None)
    assert torch.equal(disk[:], mem)
    assert sorted(f.name.split(".", 1)[1] for f in (tmp_path / "c").iterdir()) == ["json", "u8"]


def test_two_builders_of_one_cache_do_not_collide(tmp_path, monkeypatch):
    """Two trainings decode the same photos at once: the other one resumes this one's partial file and
    finishes first. Both succeed with the same rows, and no partial file is left behind."""
    recs, _ = read_dataset(make_dataset(tmp_path / "d", n_per_class=3))
    monkeypatch.setattr(cache, "CHUNK", 4)
    nested = []

    def other_training_starts(done, n):
        if not nested:
            nested.append(None)
            nested[0] = build_cache(recs, 24, tmp_path / "c")

    imgs, ok, bad = build_cache(recs, 24, tmp_path / "c", progress=other_training_starts)
    assert nested and torch.equal(imgs[:], nested[0][0][:]) and ok.all() and bad == []
    assert sorted(f.name.split(".", 1)[1] for f in (tmp_path / "c").iterdir()) == ["json", "u8"]
    mem, _, _ = build_cache(recs, 24, None)
    assert torch.equal(build_cache(recs, 24, tmp_path / "c")[0][:], mem)


def test_cache_keeps_colour_corrected_images_apart(tmp_path):
    recs, _ = read_dataset(make_dataset(tmp_path / "d", n_per_class=2))
    raw, _, _ = build_cache(recs, 24, tmp_path / "c")
    sog, _, _ = build_cache(recs, 24, tmp_path / "c", colour="shades_of_gray")
    assert len(list((tmp_path / "c").glob("*.u8"))) == 2
    assert not torch.equal(raw[:], sog[:])
    assert np.array_equal(sog[0].numpy().transpose(1, 2, 0), colour_constancy(load_image(recs[0].path, 24)))
    again, _, _ = build_cache(recs, 24, tmp_path / "c", colour="shades_of_gray")  # read back from disk
    assert torch.equal(again[:], sog[:])


def test_cache_progress_shows_rate_and_time_left_from_where_the_build_started(capsys):
    from inference.ml.cli import ConsoleProgress
    from inference.ml.prepare import CacheProgress

    events = []
    p = CacheProgress(events.append)
    p(256, 1024)  # a resumed build starts at 256 photos: nothing to time yet
    assert events == []
    p(512, 1024)
    e = events[-1]
    assert (e["stage"], e["batch"], e["batches"]) == ("cache", 512, 1024)
    assert e["images_per_second"] > 0 and e["eta_seconds"] == pytest.approx(512 / e["images_per_second"])
    ConsoleProgress(every_s=0)(e)
    line = capsys.readouterr().err
    assert line.startswith("[cache] decoded 512/1024 images, ") and "photos/s, ETA " in line
    done = CacheProgress(events.append)
    done(1024, 1024)  # a cache found complete: one event, no rate
    assert events[-1]["batch"] == 1024 and events[-1]["images_per_second"] is None
