from django.urls import path

from . import views, views_triage

app_name = "inference"
urlpatterns = [
    path("cases/<int:pk>/predictions/state.json", views.case_prediction_state, name="case_prediction_state"),
    path("cases/<int:pk>/predictions/recompute", views.case_recompute, name="case_recompute"),
    path("photos/<int:pk>/prediction", views.photo_prediction_block, name="photo_prediction_block"),
    path("photos/<int:pk>/assessment", views.assessment_create, name="assessment_create"),
    path("predictions/<int:pk>.json", views.prediction_json, name="prediction_json"),
    path("overlays/<int:pk>.png", views.overlay_image, name="overlay_image"),
    path("models/", views.model_list, name="model_list"),
    path("models/<int:pk>/", views.model_detail, name="model_detail"),
    path("models/<int:pk>/activate", views.model_activate, name="model_activate"),
    path("models/<int:pk>/recompute", views.model_recompute, name="model_recompute"),
    path("models/<int:pk>/triage-targets", views_triage.model_triage_targets, name="model_triage_targets"),
    path("training/", views.training_list, name="training_list"),
    path("training/<int:pk>/", views.training_detail, name="training_detail"),
    path("training/<int:pk>/state.json", views.training_state_json, name="training_state"),
    path("training/<int:pk>/cancel", views.training_cancel, name="training_cancel"),
    path("assets/plotly.min.js", views.plotly_js, name="plotly_js"),
]
