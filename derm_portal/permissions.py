"""DRF permission classes built on derm_portal.roles."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from . import roles


def role_permission(read_roles, write_roles=None, name="RolePermission"):
    """A DRF permission class: safe methods need one of read_roles, others one of write_roles."""
    write_roles = tuple(write_roles if write_roles is not None else read_roles)

    class _RolePermission(BasePermission):
        def has_permission(self, request, view):
            if not request.user or not request.user.is_authenticated:
                return False
            wanted = read_roles if request.method in SAFE_METHODS else write_roles
            return roles.has_role(request.user, *wanted)

    _RolePermission.__name__ = name
    return _RolePermission


# The OpenAPI schema and docs pages: staff who use the API, never readers of blinded studies.
ApiDocsPermission = role_permission(tuple(r for r in roles.ALL_ROLES if r != roles.READER), (), "ApiDocsPermission")
