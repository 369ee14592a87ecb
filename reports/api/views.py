"""Reader-study API: coordinators read studies, results and all readings; readers read only their
own answers. Same rules as the pages."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from derm_portal import roles
from derm_portal.permissions import role_permission

from .. import results, selectors
from ..models import Reading
from . import serializers as s

CoordinatorPermission = role_permission(
    roles.CAN_COORDINATE_STUDIES, roles.CAN_COORDINATE_STUDIES, "CoordinatorPermission"
)
ReaderPermission = role_permission((roles.READER,), (roles.READER,), "ReaderPermission")


class ReaderStudyViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ReaderStudySerializer
    permission_classes = [CoordinatorPermission]
    filterset_fields = ["status", "question_type"]
    search_fields = ["title"]

    def get_queryset(self):
        return selectors.study_list(user=self.request.user).order_by("-created_at", "-id")

    @extend_schema(
        responses={
            200: OpenApiResponse(
                description="The results dict shown on the results page: "
                "tasks (ROC, readers, MRMC), readers, model_summary, aided, method."
            )
        }
    )
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        study = selectors.study_get(user=request.user, pk=pk)
        return Response(results.reader_study_results(study=study))

    @extend_schema(responses={200: s.StudyReadingSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def readings(self, request, pk=None):
        study = selectors.study_get(user=request.user, pk=pk)
        qs = selectors.readings_for_export(study=study)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(s.StudyReadingSerializer(page, many=True).data)


class MyReadingViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.OwnReadingSerializer
    permission_classes = [ReaderPermission]
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Reading.objects.none()
        return selectors.own_readings(user=self.request.user)
