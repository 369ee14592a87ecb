"""Imported by the Celery workers of test_worker_redelivery (`-I`): short Redis visibility timeout
so an unacknowledged job of a killed worker comes back within seconds, and (with
DERM_TEST_HANG_PREDICTION=1) a prediction that hangs after claiming its row, so the test can
kill the worker mid-job."""

import os
import time

from derm_portal.celery import app

opts = dict(app.conf.broker_transport_options or {})
opts.update({"visibility_timeout": 3, "unacked_restore_interval": 1, "unacked_restore_throttle": 1})
app.conf.broker_transport_options = opts

if os.environ.get("DERM_TEST_HANG_PREDICTION") == "1":
    import django

    django.setup()
    import redis

    from inference.services import predictions

    def _hang(photo):  # called right after the row was claimed (status running)
        redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).set(os.environ["DERM_TEST_HANG_KEY"], "1", ex=600)
        while True:
            time.sleep(1)

    predictions._open_photo_rgb = _hang
