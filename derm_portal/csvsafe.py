"""CSV cells that stay text in a spreadsheet."""


def spreadsheet_safe(value):
    """Free text typed or uploaded by users must not become a formula when a CSV export is opened in a
    spreadsheet (=, +, -, @, tab or carriage return at the start): such cells get an apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
