from django.urls import path

from . import views

# Included from annotation/urls.py (namespace "annotation").
urlpatterns = [
    path("cases/<int:pk>/phone-links/", views.phone_token_create, name="phone_token_create"),
    path("cases/<int:pk>/phone-links/<int:token_pk>/revoke/", views.phone_token_revoke, name="phone_token_revoke"),
    path("cases/<int:pk>/photos.json", views.case_photos_json, name="case_photos_json"),
    # Public (middleware lets /m/ through): the token is the credential.
    path("m/upload/<str:token>/", views.phone_upload, name="phone_upload"),
]
