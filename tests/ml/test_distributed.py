"""Data-parallel training with torch.distributed: two gloo processes (torchrun) on a tiny generated set
write one valid artefact; each process trains on its share of every batch."""

import json
import os
import subprocess
import sys

import numpy as np

from inference.ml.distributed import shard
from inference.ml.predict import Predictor

from .conftest import ROOT


def test_each_process_takes_its_share_of_the_global_batch():
    batch = np.arange(10, 42)
    parts = [shard(batch, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [16, 16]
    assert sorted(np.concatenate(parts).tolist()) == batch.tolist()  # every photo once, none twice
    assert shard(batch, 0, 1) is batch or np.array_equal(shard(batch, 0, 1), batch)


def _torchrun(tmp_path, taxonomy_file, tiny_data, epochs: int, batch_size: int):
    """(command, environment) of a 2-process gloo training of the tiny model into tmp_path/m."""
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "DERM_ML_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "inference.ml", "train", "--data", str(tiny_data), "--taxonomy", str(taxonomy_file)]
    cmd += ["--out", str(tmp_path / "m"), "--backbone", "tiny", "--no-pretrained", "--image-size", "32"]
    cmd += ["--epochs", str(epochs), "--coarse-epochs", "1", "--batch-size", str(batch_size)]
    return cmd + ["--threads", "1", "--device", "cpu"], env


def test_two_gloo_processes_write_one_valid_artefact(tmp_path, taxonomy_file, tiny_data):
    out = tmp_path / "m"
    cmd, env = _torchrun(tmp_path, taxonomy_file, tiny_data, epochs=2, batch_size=8)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    man = json.loads((out / "model.json").read_text())
    assert man["training"]["processes"] == 2 and man["training"]["device"] == "cpu"
    assert r.stdout.count("model written to") == 1  # rank 0 wrote and reports the one artefact
    assert not (out / ".work").exists() and not (out / ".partial").exists()
    P = Predictor.load(out, device="cpu")
    from PIL import Image

    d = P.predict_one(Image.open(next((tiny_data / "images").iterdir())))
    assert abs(sum(d.meta_probabilities.values()) - 1) < 1e-4
    fine = man["fine_training"]
    assert len(fine["history"]) == 2 and np.isfinite(fine["history"][-1]["loss"])


def test_after_a_lost_process_the_same_command_resumes_from_the_last_epoch(tmp_path, taxonomy_file, tiny_data):
    """One of the two processes is killed (SIGKILL) once the first fine epoch's checkpoint exists: the
    group stops with an error and no artefact; the same command again resumes from that checkpoint
    instead of starting over, and rank 0 writes the one artefact with every epoch in its history."""
    import signal
    import time

    out = tmp_path / "m"
    cmd, env = _torchrun(tmp_path, taxonomy_file, tiny_data, epochs=8, batch_size=4)
    log = tmp_path / "first.txt"
    with open(log, "w") as fh:
        launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
        ckpt = out / ".work" / "fine.ckpt"
        deadline = time.time() + 600
        while not ckpt.exists() and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
        assert ckpt.exists() and len(workers) == 2, log.read_text()[-3000:]
        os.kill(int(workers[-1]), signal.SIGKILL)
        assert launcher.wait(timeout=600) != 0
    assert not (out / "model.json").exists() and ckpt.exists()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert "resumed" in text, text[-3000:]
    man = json.loads((out / "model.json").read_text())
    assert man["training"]["processes"] == 2
    assert [h["epoch"] for h in man["fine_training"]["history"]] == list(range(1, 9))
    assert text.count("model written to") == 1
