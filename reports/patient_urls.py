"""Patient malignancy report URLs, included by reports/urls.py (namespace "reports")."""

from django.urls import path

from . import views_patient

urlpatterns = [
    path("photos/<int:photo_pk>/patient-report/", views_patient.patient_report, name="patient_report"),
    path("photos/<int:photo_pk>/patient-report.pdf", views_patient.patient_report_pdf, name="patient_report_pdf"),
]
