"""The annotation app's models: cases.py (patients, cases, photos, labels, taxonomy) and
workspace.py (boxes, annotations, review, crops). Business rules live in services.py (writes) and
selectors.py (reads); models hold fields, choices, constraints and small properties only."""

from .cases import (  # noqa: F401
    Case,
    CaseStatus,
    DiagnosisLabel,
    ExclusionReason,
    ImportRun,
    LabelChange,
    LabelSource,
    MalignancyGrade,
    MetaClass,
    Modality,
    Patient,
    PhoneUploadToken,
    Photo,
    Sex,
    SubClass,
    Taxonomy,
    photo_upload_to,
    report_upload_to,
)
from .workspace import (  # noqa: F401
    AnnotationEvent,
    AnnotationStatus,
    AnnotatorGroup,
    Assignment,
    Box,
    BoxOrigin,
    Crop,
    PhotoAnnotation,
    ReviewComment,
    crop_upload_to,
)
