from django.urls import include, path

from . import views
from . import workspace_views as ws

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
    # Annotation workspace (boxes, review, agreement, import/export, crops)
    path("annotate/", ws.workspace, name="workspace"),
    path("annotate/photo/<int:pk>/", ws.workspace_photo, name="workspace_photo"),
    path("annotate/review/<int:pk>/", ws.review_photo, name="review_photo"),
    path("annotate/groups/", ws.groups_page, name="workspace_groups"),
    path("annotate/agreement/", ws.agreement_page, name="workspace_agreement"),
    path("annotate/gold/<int:pk>/", ws.gold_toggle, name="workspace_gold"),
    path("annotate/io/", ws.io_page, name="workspace_io"),
    path("annotate/crops/", ws.crops_page, name="workspace_crops"),
    path("annotate/crops/<int:pk>/file", ws.crop_file, name="crop_file"),
]
