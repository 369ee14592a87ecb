"""API for patients, cases, photos, labels and taxonomy — same rules as the pages."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from derm_portal import roles
from derm_portal.permissions import role_permission

from .. import selectors, services
from ..images import ImageRejected, read_upload
from ..models import Patient, Photo, SubClass, Taxonomy
from ..views import stream_photo
from . import serializers as s

ClinicalPermission = role_permission(roles.CAN_VIEW_CLINICAL, roles.CAN_EDIT_CASES, "ClinicalPermission")
LabelPermission = role_permission(roles.CAN_VIEW_CLINICAL, roles.CAN_RECORD_LABEL, "LabelPermission")
TaxonomyPermission = role_permission(roles.ALL_ROLES, roles.CAN_EDIT_TAXONOMY, "TaxonomyPermission")


class PatientViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.PatientSerializer
    permission_classes = [ClinicalPermission]
    search_fields = ["code"]
    filterset_fields = ["sex", "birth_year"]

    def get_queryset(self):
        return (
            Patient.objects.filter(cases__in=selectors.cases_visible_to(self.request.user)).distinct().order_by("code")
        )


class CasePagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


class CaseViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [ClinicalPermission]
    ordering_fields = ["created_at", "id"]
    pagination_class = CasePagination

    def get_serializer_class(self):
        return s.CaseListSerializer if self.action == "list" else s.CaseSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str),
            OpenApiParameter("status", str),
            OpenApiParameter("diagnosis", str),
            OpenApiParameter("confirmed", str, enum=["yes", "no"]),
            OpenApiParameter("modality", str),
        ]
    )
    def list(self, request, *args, **kwargs):
        # Cut the page from the ids first, then annotate only the rows shown (see case_rows).
        ids = self.paginate_queryset(self.get_queryset().values_list("pk", flat=True))
        rows = selectors.case_rows(user=request.user, ids=list(ids))
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)

    def get_queryset(self):
        if self.action == "list":
            p = self.request.query_params
            return selectors.case_list(
                user=self.request.user,
                **{k: p.get(k, "").strip() for k in ("q", "status", "diagnosis", "confirmed", "modality")},
            )
        return (
            selectors.cases_visible_to(self.request.user)
            .select_related("patient")
            .prefetch_related("labels__sub_class", "photos")
        )

    def filter_queryset(self, queryset):
        return queryset if self.action == "list" else super().filter_queryset(queryset)

    def perform_create(self, serializer):
        d = serializer.validated_data
        if not d.get("patient_code"):
            raise ValidationError({"patient_code": ["A pseudonymous patient code is required."]})
        try:
            serializer.instance = services.case_create(
                patient_code=d["patient_code"],
                body_site=d.get("body_site", ""),
                clinical_history=d.get("clinical_history", ""),
                age_at_visit=d.get("age_at_visit"),
                created_by=self.request.user,
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict if hasattr(exc, "message_dict") else exc.messages)

    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        case = selectors.case_get(user=request.user, pk=pk)
        return Response(s.LabelChangeSerializer(selectors.case_label_history(case=case), many=True).data)


class PhotoViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [ClinicalPermission]
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    filterset_fields = ["case", "modality"]

    def get_serializer_class(self):
        return s.PhotoUploadSerializer if self.action == "create" else s.PhotoSerializer

    def get_queryset(self):
        return Photo.objects.filter(case__in=selectors.cases_visible_to(self.request.user)).order_by("id")

    def create(self, request, *args, **kwargs):
        ser = s.PhotoUploadSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        upload = d["file"]
        try:
            photo = services.photo_attach(
                case=d["case"],
                data=read_upload(upload, upload.name),
                filename=upload.name,
                uploaded_by=request.user,
                modality=d["modality"],
                acquired_at=d.get("acquired_at"),
            )
        except (ImageRejected, services.DuplicatePhoto) as exc:
            code = status.HTTP_409_CONFLICT if isinstance(exc, services.DuplicatePhoto) else status.HTTP_400_BAD_REQUEST
            return Response({"file": [str(exc)]}, status=code)
        return Response(s.PhotoSerializer(photo).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "image/*"): bytes})
    @action(detail=True, methods=["get"])
    def file(self, request, pk=None):
        return stream_photo(selectors.photo_get(user=request.user, pk=pk), request.query_params.get("w"))


class LabelViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [LabelPermission]
    filterset_fields = ["case", "source", "confirmed"]

    def get_serializer_class(self):
        return s.LabelWriteSerializer if self.action == "create" else s.LabelSerializer

    def get_queryset(self):
        from ..models import DiagnosisLabel

        return (
            DiagnosisLabel.objects.filter(case__in=selectors.cases_visible_to(self.request.user))
            .select_related("sub_class", "signed_by")
            .order_by("id")
        )

    def create(self, request, *args, **kwargs):
        ser = s.LabelWriteSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        taxonomy = selectors.taxonomy_default()
        sub = SubClass.objects.filter(taxonomy=taxonomy, code=d["sub_class"]).first()
        if sub is None:
            raise ValidationError({"sub_class": [f"Unknown sub-class {d['sub_class']!r} in {taxonomy}."]})
        try:
            label = services.label_record(
                case=d["case"],
                sub_class=sub,
                source=d["source"],
                by=request.user,
                report_text=d.get("report_text", ""),
                note=d.get("note", ""),
            )
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc))
        return Response(s.LabelSerializer(label).data, status=status.HTTP_201_CREATED)


class TaxonomyViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [TaxonomyPermission]
    serializer_class = s.TaxonomySerializer
    queryset = Taxonomy.objects.prefetch_related("meta_classes__sub_classes").all()

    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        return Response(selectors.taxonomy_export(taxonomy=get_object_or_404(Taxonomy, pk=pk)))

    @extend_schema(request=dict, responses=s.TaxonomySerializer)
    @action(detail=False, methods=["post"], url_path="import")
    def import_json(self, request):
        try:
            # JSON bodies are read again strictly (a key given twice is an error, not dropped).
            is_json = (request.content_type or "").startswith("application/json")
            data = (
                services.taxonomy_from_json_bytes(request.body, source_name="request body") if is_json else request.data
            )
            tax = services.taxonomy_import(
                data=data, created_by=request.user, make_default=bool(request.query_params.get("default"))
            )
        except services.TaxonomyError as exc:
            raise ValidationError({"taxonomy": [str(exc)]})
        return Response(s.TaxonomySerializer(tax).data, status=status.HTTP_201_CREATED)
