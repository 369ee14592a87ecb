from . import views


def register(router):
    router.register("patients", views.PatientViewSet, basename="patient")
    router.register("cases", views.CaseViewSet, basename="case")
    router.register("photos", views.PhotoViewSet, basename="photo")
    router.register("labels", views.LabelViewSet, basename="label")
    router.register("taxonomies", views.TaxonomyViewSet, basename="taxonomy")
