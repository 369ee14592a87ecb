"""{% triage_model m %}: the model page's triage section, kept apart from the page's own view."""

from django import template

from derm_portal import roles

from ..triage_page import has_triage_roc, model_triage_view

register = template.Library()


@register.inclusion_tag("inference/_triage_model.html", takes_context=True)
def triage_model(context, model_version):
    request = context.get("request")
    user = getattr(request, "user", None)
    return {
        "m": model_version,
        "t": model_triage_view(model_version),
        "request": request,
        "csrf_token": context.get("csrf_token"),
        "can_edit": bool(user and roles.has_role(user, *roles.CAN_ACTIVATE_MODELS)),
    }


@register.filter
def triage_roc(model_version) -> bool:
    return has_triage_roc(model_version)
