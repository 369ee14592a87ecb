"""Upload from a phone: a desk user shows a QR code of a short-lived link; the phone
opens a login-free page under /m/upload/<token>/ that adds photos to that one case.

services.py  token issue / check / revoke and the upload itself (writes)
views.py     the desk endpoints (login + role), the public mobile page, the case panel
urls.py      included from annotation/urls.py
"""
