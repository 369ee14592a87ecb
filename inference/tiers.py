"""Urgency tiers as people read them: the case page's advice and the patient report's lay text.
Advice comes from the tier (inference/ml/triage.py), never from the malignancy score S alone."""

from __future__ import annotations

TIERS = {
    "urgent": {
        "label": "Urgent",
        "summary": "Possible high-grade malignancy (e.g. melanoma).",
        "advice": "Refer urgently to a tertiary hospital, within days.",
        "headline": "Possibly a serious skin cancer.",
        "patient_advice": "Please go to a tertiary (specialist) hospital urgently, within days, and show this report. "
        "Do not wait for the spot to change.",
        "colour": "#c62828",
        "tint": "#fdecea",
    },
    "refer": {
        "label": "Refer",
        "summary": "Possible low-grade malignancy (e.g. basal cell carcinoma, actinic keratosis).",
        "advice": "Refer to a dermatologist at a nearby hospital within the next few weeks.",
        "headline": "Possibly a slow-growing skin cancer or a pre-cancerous change.",
        "patient_advice": "Please see a dermatologist at a hospital near you within the next few weeks so the spot can "
        "be examined. Go sooner if it grows quickly, bleeds or does not heal.",
        "colour": "#b26a00",
        "tint": "#fff4e0",
    },
    "routine": {
        "label": "Routine",
        "summary": "Benign-looking.",
        "advice": "Routine care: the patient can watch the spot and come back if it changes.",
        "headline": "Most likely a harmless (benign) spot.",
        "patient_advice": "Keep an eye on it yourself. Look at the spot about once a month, ideally with a photo to "
        "compare. Come back to a doctor if it grows, changes shape or colour, itches, bleeds or does "
        "not heal.",
        "colour": "#2e7d32",
        "tint": "#e6f4ea",
    },
}
NO_TIER_LEGACY = (
    "this result was computed before urgency tiers existed, so it carries no advice; run the model on the photo again"
)


# The tier targets an artefact's thresholds are chosen for (inference/ml/triage.py DEFAULT_TARGETS), as the
# model page and the activation review name them: (key, short label, long label, what it counts).
TARGETS = (
    (
        "urgent",
        "Urgent",
        "Urgent tier (high-grade malignancy)",
        "high-grade malignant (grade 3) photos put in the urgent tier",
    ),
    (
        "malignant",
        "Refer or urgent",
        "Refer or urgent (any malignancy)",
        "malignant (grade 2-3) photos put in refer or urgent",
    ),
    (
        "high_grade",
        "High grade kept out of routine",
        "High-grade malignancy kept out of routine",
        "high-grade (grade 3) photos put in refer or urgent",
    ),
)


def targets_in(block: dict) -> list[tuple[str, str, str, str]]:
    """The TARGETS rows an artefact's held-out block reports (one calibrated before the high-grade
    target existed has no such row)."""
    return [t for t in TARGETS if t[0] in block or t[0] != "high_grade"]


def tier_info(tier: str | None) -> dict:
    return TIERS.get(tier or "", {})


def abstain_reason(pred) -> str:
    """Why a finished prediction has no tier, in plain words ("" when it has one)."""
    if pred.tier:
        return ""
    return pred.triage_reason or NO_TIER_LEGACY
