from . import views


def register(router):
    router.register("reader-studies", views.ReaderStudyViewSet, basename="reader-study")
    router.register("my-readings", views.MyReadingViewSet, basename="my-reading")
