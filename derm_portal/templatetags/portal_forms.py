"""``{% submission_token %}``: the hidden one-time token that makes a create form idempotent."""

import secrets

from django import template
from django.utils.html import format_html

from derm_portal.idempotency import FIELD

register = template.Library()


@register.simple_tag
def submission_token():
    return format_html('<input type="hidden" name="{}" value="{}">', FIELD, secrets.token_hex(16))
