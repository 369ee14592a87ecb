"""API for the model registry, predictions, overlays, assessments and training runs — same
rules as the pages (roles.CAN_SEE_PREDICTIONS for predictions and overlays)."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from annotation import selectors as annotation_selectors
from derm_portal import roles
from derm_portal.permissions import role_permission

from .. import selectors, services
from ..views import overlay_image
from . import serializers as s

ModelPermission = role_permission(roles.CAN_VIEW_MODELS, roles.CAN_ACTIVATE_MODELS, "ModelPermission")
PredictionPermission = role_permission(roles.CAN_SEE_PREDICTIONS, roles.CAN_SEE_PREDICTIONS, "PredictionPermission")
TrainingPermission = role_permission(roles.CAN_TRAIN_MODELS, roles.CAN_TRAIN_MODELS, "TrainingPermission")


def _django_errors(exc):
    if isinstance(exc, DjangoPermissionDenied):
        return PermissionDenied(str(exc))
    return ValidationError(exc.message_dict if hasattr(exc, "message_dict") else exc.messages)


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [ModelPermission]
    filterset_fields = ["status", "taxonomy"]
    ordering_fields = ["created_at", "id"]

    def get_queryset(self):
        return selectors.model_versions_visible_to(self.request.user).order_by("-created_at", "-id")

    def get_serializer_class(self):
        return s.ModelVersionDetailSerializer if self.action == "retrieve" else s.ModelVersionSerializer

    @extend_schema(request=s.ActivateSerializer, responses=s.ModelVersionSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        mv = self.get_object()
        ser = s.ActivateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            mv = services.model_activate(
                model_version=mv,
                by=request.user,
                note=ser.validated_data.get("note", ""),
                recompute=ser.validated_data.get("recompute", False),
                reason=ser.validated_data.get("reason", ""),
            )
        except services.ActivationReasonRequired as exc:
            raise ValidationError({"reason": [str(exc)], "concerns": exc.concerns})
        except services.RegistryError as exc:
            raise ValidationError(str(exc))
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc))
        return Response(s.ModelVersionSerializer(mv).data)


class PredictionViewSet(viewsets.ReadOnlyModelViewSet):
    """Predictions; filter with ?photo=<id> or ?case=<id>. POST /predictions/request/ {photo, force}
    asks for a (re)computation by the active model."""

    serializer_class = s.PredictionSerializer
    permission_classes = [PredictionPermission]
    filterset_fields = ["photo", "model_version", "status"]
    ordering_fields = ["created_at", "id"]

    def get_queryset(self):
        qs = (
            selectors.predictions_visible_to(self.request.user)
            .prefetch_related("overlays")
            .order_by("-created_at", "-id")
        )
        case = self.request.query_params.get("case")
        if case:
            if not case.isdigit():
                raise ValidationError({"case": "must be an integer"})
            qs = qs.filter(photo__case_id=int(case))
        return qs

    @extend_schema(request=s.PredictionRequestSerializer, responses={202: s.PredictionSerializer})
    @action(detail=False, methods=["post"], url_path="request")
    def request_prediction(self, request):
        ser = s.PredictionRequestSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        photo = annotation_selectors.photo_get(user=request.user, pk=ser.validated_data["photo"])
        pred = services.prediction_request(photo=photo, force=ser.validated_data["force"])
        if pred is None:
            raise ValidationError("No active model.")
        pred.refresh_from_db()
        return Response(s.PredictionSerializer(pred).data, status=status.HTTP_202_ACCEPTED)


class OverlayViewSet(viewsets.GenericViewSet):
    """GET /overlays/<id>/ streams the PNG after the permission check."""

    permission_classes = [PredictionPermission]
    serializer_class = s.OverlaySerializer

    def get_queryset(self):
        return selectors.predictions_visible_to(self.request.user).none()

    @extend_schema(responses={(200, "image/png"): bytes})
    def retrieve(self, request, pk=None):
        return overlay_image(request._request, pk=int(pk))


class AssessmentViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.AssessmentSerializer
    permission_classes = [PredictionPermission]
    filterset_fields = ["photo", "case", "agrees"]

    def get_queryset(self):
        return selectors.assessments_visible_to(self.request.user).order_by("-created_at", "-id")

    def perform_create(self, serializer):
        photo = annotation_selectors.photo_get(user=self.request.user, pk=serializer.validated_data["photo"].pk)
        try:
            serializer.instance = services.assessment_record(
                photo=photo,
                doctor=self.request.user,
                agrees=serializer.validated_data["agrees"],
                sub_class=serializer.validated_data.get("sub_class"),
                note=serializer.validated_data.get("note", ""),
            )
        except (DjangoValidationError, DjangoPermissionDenied) as exc:
            raise _django_errors(exc)


class TrainingRunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.TrainingRunSerializer
    permission_classes = [TrainingPermission]
    filterset_fields = ["status"]

    def get_queryset(self):
        return selectors.training_runs_visible_to(self.request.user).order_by("-created_at", "-id")

    def perform_create(self, serializer):
        d = serializer.validated_data
        try:
            serializer.instance = services.training_run_create(
                by=self.request.user,
                label_sources=d["label_sources"],
                name=d.get("name", ""),
                config=d.get("config") or {},
            )
        except (DjangoValidationError, DjangoPermissionDenied) as exc:
            raise _django_errors(exc)

    @extend_schema(request=None, responses=s.TrainingRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = services.training_run_cancel(run=self.get_object(), by=request.user)
        return Response(s.TrainingRunSerializer(run).data)
