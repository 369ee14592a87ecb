from . import views


def register(router):
    router.register("models", views.ModelVersionViewSet, basename="modelversion")
    router.register("predictions", views.PredictionViewSet, basename="prediction")
    router.register("overlays", views.OverlayViewSet, basename="overlay")
    router.register("assessments", views.AssessmentViewSet, basename="assessment")
    router.register("training-runs", views.TrainingRunViewSet, basename="trainingrun")
