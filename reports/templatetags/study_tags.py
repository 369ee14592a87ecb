from django import template

register = template.Library()


@register.filter
def pct(value, digits: int = 1):
    """0.8123 -> '81.2 %'; None -> '—'."""
    if value is None or value == "":
        return "—"
    return f"{100 * float(value):.{int(digits)}f} %"


@register.filter
def num(value, digits: int = 3):
    if value is None or value == "":
        return "—"
    return f"{float(value):.{int(digits)}f}"


@register.filter
def signed_pct(value, digits: int = 1):
    if value is None or value == "":
        return "—"
    return f"{100 * float(value):+.{int(digits)}f} pp"


@register.filter
def pvalue(value):
    if value is None or value == "":
        return "—"
    v = float(value)
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


@register.filter
def p_eq(value):
    """'p = 0.012' or 'p < 0.001'."""
    if value is None or value == "":
        return "p —"
    v = float(value)
    return "p < 0.001" if v < 0.001 else f"p = {v:.3f}"
