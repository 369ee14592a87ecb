#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main():
    # Production unless told otherwise: `./run serve` and the tests name their settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "derm_portal.settings.production")
    from django.core.management import execute_from_command_line

    from derm_portal.settings import SettingsRefused

    try:
        execute_from_command_line(sys.argv)
    except SettingsRefused as exc:  # a clear line, not a traceback
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
