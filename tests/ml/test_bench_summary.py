"""bench/summarize_runs.py: rows, the shared-CPU flag and the target counts over pipeline results."""

import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "summarize_runs", Path(__file__).resolve().parents[2] / "bench" / "summarize_runs.py"
)
summarize_runs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(summarize_runs)


def _metrics(acc, bal, f1, auc):
    return {"accuracy": acc, "balanced_accuracy": bal, "macro_f1": f1, "macro_auc": auc}


PROBED = {"chosen": 224, "reason": "224 px: training estimated at 37 min on this machine (budget 45 min)"}


def _result(seed, product, flat, minutes, load, choice=PROBED, progressive=None, **settings):
    minus = {k: product[k] - flat[k] for k in ("balanced_accuracy", "macro_f1")}
    return {
        "training_minutes_fine_transfer_coarse": minutes,
        "settings": {
            "seed": seed,
            "image_size": 224,
            "progressive_size": progressive,
            "image_size_choice": choice,
            "epochs": 12,
            "epochs_set": {"fine": False, "coarse": False},
            "positive": ["mel"],
            "class_balance": "sqrt_weights",
            **settings,
        },
        "loadavg_samples": [["t", [str(0.3), "0", "0"]]] * 2 + [["t", [str(load), "0", "0"]]] * 5,
        "metrics": {
            "hierarchical_product": product,
            "flat": flat,
            "product_minus_flat": minus,
            "product_minus_flat_bootstrap": {
                k: {"diff": v, "ci_low": v - 0.03, "ci_high": v + 0.03} for k, v in minus.items()
            },
        },
    }


def test_rows_flag_a_shared_cpu_and_count_the_targets():
    alone = _result(0, _metrics(0.86, 0.76, 0.70, 0.96), _metrics(0.85, 0.74, 0.69, 0.96), 35.0, 2.1, progressive=160)
    shared = _result(
        1,
        _metrics(0.80, 0.70, 0.60, 0.94),
        _metrics(0.81, 0.69, 0.62, 0.95),
        70.0,
        4.0,
        choice=None,
        augment={"cutout_p": 0},
    )
    rows = [summarize_runs.row("a", alone), summarize_runs.row("b", shared)]
    assert rows[0]["plan"] == "224 from 160" and not rows[0]["shared"]
    assert rows[1]["plan"] == "224 (set)" and rows[1]["shared"]  # load 4 on 2 cores: another run beside it
    assert rows[0]["overrides"] == "" and rows[1]["overrides"] == 'augment={"cutout_p": 0}'
    s = summarize_runs.summarize(rows)
    assert s["reached"] == {
        "accuracy": 1,
        "balanced_accuracy": 1,
        "macro_auc": 1,
        "product_ge_flat": 1,
        "training_minutes": 1,
    }
    assert s["alone"] == 1  # the shared run's 70 min do not count
    assert s["mean"]["accuracy"] == pytest.approx(0.83)
    assert s["sd"]["balanced_accuracy"] == pytest.approx(0.0424264, abs=1e-6)
    text = summarize_runs.render(rows, s, markdown=True)
    assert "| a | (default) | 0 | 224 from 160 | 35.0 min |" in text
    assert '| b | augment={"cutout_p": 0} | 1 | 224 (set) |' in text
    assert "70.0 min (shared CPU, load 4.0)" in text
    assert "product >= flat in balanced accuracy and macro F1: 1 of 2" in text


def test_a_file_that_is_not_a_results_file_is_named(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(SystemExit) as e:
        summarize_runs.main([str(bad)])
    assert "notes.json: not a results file of bench/run_pipeline.py" in str(e.value)


def test_a_run_that_reused_a_fine_model_counts_its_training_time():
    r = _result(
        4,
        _metrics(0.84, 0.69, 0.65, 0.97),
        _metrics(0.84, 0.69, 0.67, 0.97),
        5.3,
        2.0,
        fine_from="models/def_s4",
        transfer_cut="all",
    )
    r["timings_seconds"] = {"fine": 0.0, "fine_reused_seconds": 1758.0, "coarse": 318.0}
    r["training_minutes_including_reused_fine"] = (1758.0 + 318.0) / 60
    row = summarize_runs.row("call_s4", r)
    assert row["minutes"] == pytest.approx(34.6) and row["fine_reused"]
    assert row["overrides"] == 'fine_from="models/def_s4" transfer_cut="all"'
    text = summarize_runs.render([row], summarize_runs.summarize([row]), markdown=False)
    assert "34.6 min (fine model reused)" in text
