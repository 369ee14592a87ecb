"""Roles are Django groups. Every permission decision in the portal starts here.

- dermatologist: sees and edits clinical data, confirms pathology labels, sees predictions
- annotator: curates cases, photos and boxes; records non-confirmed labels
- coordinator (study coordinator): sees only histopathology-confirmed cases (the only ones a
  reader study can use; annotation.selectors.cases_visible_to), builds and runs studies
- reader: sees only the blinded cases of studies they are invited to
- admin: everything, including taxonomy edits, model activation and patient-data export
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

DERMATOLOGIST = "dermatologist"
ANNOTATOR = "annotator"
COORDINATOR = "coordinator"
READER = "reader"
ADMIN = "admin"
ALL_ROLES = (DERMATOLOGIST, ANNOTATOR, COORDINATOR, READER, ADMIN)
ROLE_LABELS = {
    DERMATOLOGIST: "Dermatologist",
    ANNOTATOR: "Annotator",
    COORDINATOR: "Study coordinator",
    READER: "Reader",
    ADMIN: "Admin",
}

# Who may do what. One table, tested role by role in tests/annotation/test_permissions.py.
CAN_VIEW_CLINICAL = (DERMATOLOGIST, ANNOTATOR, COORDINATOR, ADMIN)  # case pages; which cases: below
CAN_VIEW_ALL_CASES = (DERMATOLOGIST, ANNOTATOR, ADMIN)
CAN_VIEW_CONFIRMED_CASES = (COORDINATOR,)  # confirmed cases only
CAN_EDIT_CASES = (DERMATOLOGIST, ANNOTATOR, ADMIN)
CAN_RECORD_LABEL = (DERMATOLOGIST, ANNOTATOR, ADMIN)
CAN_CONFIRM_LABEL = (DERMATOLOGIST, ADMIN)
CAN_EDIT_TAXONOMY = (ADMIN,)
CAN_EXPORT_PATIENT_DATA = (ADMIN,)
CAN_SEE_PREDICTIONS = (DERMATOLOGIST, ADMIN)
CAN_TRAIN_MODELS = (DERMATOLOGIST, ADMIN)
CAN_ANNOTATE = (ANNOTATOR, DERMATOLOGIST, ADMIN)
CAN_COORDINATE_STUDIES = (COORDINATOR, ADMIN)
CAN_VIEW_MODELS = (DERMATOLOGIST, COORDINATOR, ADMIN)  # model registry pages (metrics, no patient data)
CAN_ACTIVATE_MODELS = (ADMIN,)


def user_roles(user: AbstractBaseUser | AnonymousUser | None) -> set[str]:
    if user is None or not user.is_authenticated:
        return set()
    cached = getattr(user, "_derm_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached.add(ADMIN)
        user._derm_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    """True when the user holds at least one of `roles` (superusers hold admin)."""
    if len(roles) == 1 and isinstance(roles[0], (tuple, list, set)):
        roles = tuple(roles[0])
    return bool(user_roles(user) & set(roles))


def roles_context(request):
    roles = user_roles(getattr(request, "user", None))
    return {
        "user_roles": roles,
        "is_admin": ADMIN in roles,
        "can_view_clinical": bool(roles & set(CAN_VIEW_CLINICAL)),
        "can_edit_cases": bool(roles & set(CAN_EDIT_CASES)),
        "can_annotate": bool(roles & set(CAN_ANNOTATE)),
        "can_coordinate": bool(roles & set(CAN_COORDINATE_STUDIES)),
        "can_see_predictions": bool(roles & set(CAN_SEE_PREDICTIONS)),
        "is_reader": READER in roles,
    }


def ensure_groups() -> None:
    from django.contrib.auth.models import Group

    for name in ALL_ROLES:
        Group.objects.get_or_create(name=name)


def require_role(*wanted: str):
    """View decorator: 403 unless the user holds one of `wanted`."""
    from functools import wraps

    from django.core.exceptions import PermissionDenied

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, *wanted):
                raise PermissionDenied("Your role may not open this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
