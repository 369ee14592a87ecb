"""The annotation app's writes, as other apps and the pages call them: cases and photos
(cases.py) and diagnosis labels and the taxonomy (labels.py). Boxes, review and
import/export have their own modules (boxes.py, review.py, interchange/)."""

from __future__ import annotations

from .cases import (
    BatchResult,
    DuplicatePhoto,
    NothingStored,
    case_create,
    case_create_with_photos,
    case_set_status,
    patient_get_or_create,
    photo_attach,
    photos_attach_batch,
    stored_file_delete,
)
from .labels import (
    TaxonomyError,
    label_record,
    metaclass_update,
    subclass_update,
    taxonomy_edit,
    taxonomy_from_json_bytes,
    taxonomy_import,
    taxonomy_load_default,
    taxonomy_make_default,
    taxonomy_validate,
)

__all__ = [
    "BatchResult",
    "DuplicatePhoto",
    "NothingStored",
    "TaxonomyError",
    "case_create",
    "case_create_with_photos",
    "case_set_status",
    "label_record",
    "metaclass_update",
    "patient_get_or_create",
    "photo_attach",
    "photos_attach_batch",
    "stored_file_delete",
    "subclass_update",
    "taxonomy_edit",
    "taxonomy_from_json_bytes",
    "taxonomy_import",
    "taxonomy_load_default",
    "taxonomy_make_default",
    "taxonomy_validate",
]
