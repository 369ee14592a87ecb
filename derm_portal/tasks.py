"""The reconciler as a Celery task, sent by Celery beat every DERM_RECONCILE_SECONDS (see celery.py)."""

from celery import shared_task

from .reconcile import reconcile


@shared_task(name="derm_portal.reconcile", ignore_result=True)
def reconcile_task() -> dict:
    return reconcile()
