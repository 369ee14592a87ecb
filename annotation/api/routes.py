from . import views


def register(router):
    router.register("patients", views.PatientViewSet, basename="patient")
    router.register("cases", views.CaseViewSet, basename="case")
    router.register("photos", views.PhotoViewSet, basename="photo")
    router.register("labels", views.LabelViewSet, basename="label")
    router.register("taxonomies", views.TaxonomyViewSet, basename="taxonomy")

    # Annotation workspace (boxes, review, agreement): annotation/workspace_api.py
    from .. import workspace_api

    router.register("workspace", workspace_api.WorkspaceViewSet, basename="workspace")
    router.register("reviews", workspace_api.ReviewViewSet, basename="review")
    router.register("boxes", workspace_api.BoxViewSet, basename="box")
    router.register("agreement", workspace_api.AgreementViewSet, basename="agreement")
