from django.urls import include, path

from . import views

app_name = "annotation"
urlpatterns = [
    path("cases/", views.case_list, name="case_list"),
    path("cases/new/", views.case_create, name="case_create"),
    path("cases/export.csv", views.cases_export, name="cases_export"),
    path("cases/<int:pk>/", views.case_detail, name="case_detail"),
    path("cases/<int:pk>/photos/", views.photo_upload, name="photo_upload"),
    path("cases/<int:pk>/labels/", views.label_record, name="label_record"),
    path("cases/<int:pk>/status/", views.case_status, name="case_status"),
    path("cases/<int:pk>/labels/<int:label_pk>/report", views.label_report_file, name="label_report_file"),
    path("photos/<int:pk>/file", views.photo_file, name="photo_file"),
    path("taxonomy/", views.taxonomy_page, name="taxonomy"),
    path("taxonomy/<int:pk>/", views.taxonomy_page, name="taxonomy_version"),
    path("taxonomy/<int:pk>/export.json", views.taxonomy_export, name="taxonomy_export"),
    path("", include("annotation.phone.urls")),  # upload from phone (QR link, /m/upload/<token>/)
]
