"""Cases, photos, labels and lesion boxes.

Where things are: models.py (all tables); cases.py (patients, cases, photos) and
labels.py (diagnosis labels, taxonomy), both reached by other apps through services.py,
with reads in selectors.py; boxes.py (box editor rules and work queues); review.py and
agreement.py (two-group review, gold references, inter-annotator agreement);
interchange/ (import and export); crops.py (training crops); images.py (upload
decoding); phone/ (upload by phone link); views.py (case, label and taxonomy pages),
workspace_views.py (box, review, import/export and crop pages), api/ and workspace_api.py
(REST).
"""
