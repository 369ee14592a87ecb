"""Model page figures come from the evaluation report as-is (nothing recomputed)."""

from inference import charts

REPORT = {
    "n": 10,
    "flat": {"accuracy": 0.5, "balanced_accuracy": 0.4, "macro_f1": 0.3, "top3_accuracy": 0.9, "macro_auc": 0.7},
    "hierarchical_hard": {
        "accuracy": 0.55,
        "balanced_accuracy": 0.45,
        "macro_f1": 0.35,
        "top3_accuracy": 0.9,
        "macro_auc": 0.72,
    },
    "hierarchical_product": {
        "accuracy": 0.6,
        "balanced_accuracy": 0.5,
        "macro_f1": 0.4,
        "top3_accuracy": 0.95,
        "macro_auc": 0.75,
        "classes": ["a", "b"],
        "confusion_matrix": [[3, 1], [2, 4]],
        "confusion_matrix_row_percent": [[75.0, 25.0], [33.3, 66.7]],
        "per_class": {
            "a": {
                "support": 4,
                "recall": 0.75,
                "precision": 0.6,
                "f1": 0.66,
                "specificity": 0.66,
                "auc": 0.8,
                "ci_low": 0.6,
                "ci_high": 0.95,
                "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1]},
            },
            "b": {"support": 6, "recall": 0.66, "precision": 0.8, "f1": 0.72, "specificity": 0.75, "auc": None},
        },
    },
}


def test_figures_and_tables():
    figs = charts.figures(REPORT)
    assert set(figs) == {"confusion", "comparison", "auc", "roc"}
    cm = figs["confusion"]["data"][0]
    assert cm["z"] == [[75.0, 25.0], [33.3, 66.7]] and cm["text"] == [["3", "1"], ["2", "4"]]
    assert figs["confusion"]["layout"]["xaxis"]["title"]["text"] == "Predicted class"
    bars = figs["comparison"]["data"]
    assert [b["name"] for b in bars] == [label for _, label in charts.FUSIONS]
    assert bars[2]["y"] == [0.6, 0.5, 0.4, 0.95, 0.75]
    assert figs["auc"]["data"][0]["x"] == ["a"]  # a class without AUC is left out
    assert figs["auc"]["data"][0]["error_y"]["array"][0] == 0.95 - 0.8
    assert figs["roc"]["layout"]["xaxis"]["title"]["text"].startswith("False positive rate")
    assert charts.has_roc_points(REPORT)
    assert charts.metrics_summary(REPORT)["macro_f1"] == 0.4 and charts.metrics_summary(REPORT)["flat_macro_f1"] == 0.3
    assert [r["key"] for r in charts.comparison_table(REPORT)] == ["flat", "hierarchical_hard", "hierarchical_product"]


def test_empty_report():
    assert charts.figures({}) == {} and not charts.has_roc_points({}) and charts.malignancy_table({}) is None
