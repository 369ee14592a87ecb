from rest_framework import serializers

from annotation.models import LabelSource, SubClass

from ..models import DoctorAssessment, GradCamOverlay, ModelVersion, Prediction, TrainingRun


class ModelVersionSerializer(serializers.ModelSerializer):
    taxonomy_name = serializers.CharField(source="taxonomy.__str__", read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "taxonomy",
            "taxonomy_name",
            "status",
            "data_fingerprint",
            "code_version",
            "created_by",
            "created_at",
            "activated_at",
            "activated_by",
        ]


class ModelVersionDetailSerializer(ModelVersionSerializer):
    class Meta(ModelVersionSerializer.Meta):
        fields = ModelVersionSerializer.Meta.fields + ["metrics", "manifest"]


class ActivateSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=500)
    recompute = serializers.BooleanField(required=False, default=False)
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=2000,
        help_text="Required when the model fails an activation check (below a tier target, "
        "no triage calibration, too few training photos of a class).",
    )


class OverlaySerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    box_mass = serializers.SerializerMethodField(
        help_text="Share (0..1) of the heat map inside the photo's current annotator boxes; null without boxes."
    )

    class Meta:
        model = GradCamOverlay
        fields = ["id", "target_kind", "target", "rank", "scale_max", "box_mass", "url"]

    def get_box_mass(self, obj) -> float | None:
        from ..selectors import overlay_box_masses

        cache = self.context.setdefault("_box_masses", {})
        if obj.prediction_id not in cache:
            cache[obj.prediction_id] = overlay_box_masses(prediction=obj.prediction)
        return cache[obj.prediction_id].get(obj.pk)

    def get_url(self, obj) -> str:
        from django.urls import reverse

        return reverse("inference:overlay_image", args=[obj.pk])


class PredictionSerializer(serializers.ModelSerializer):
    case = serializers.IntegerField(source="photo.case_id", read_only=True)
    overlays = OverlaySerializer(many=True, read_only=True)
    model_version_name = serializers.CharField(source="model_version.name", read_only=True)
    triage = serializers.SerializerMethodField(
        help_text="Urgency tier (null when the model abstains), plain advice and the reason, as on the case page."
    )

    class Meta:
        model = Prediction
        fields = [
            "id",
            "photo",
            "case",
            "model_version",
            "model_version_name",
            "status",
            "ranked",
            "meta_probabilities",
            "fused_method",
            "malignancy_score",
            "malignancy_grade",
            "margin",
            "ood_score",
            "looks_unfamiliar",
            "triage",
            "calibrated",
            "warning",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
            "attempts",
            "error",
            "overlays",
        ]

    def get_triage(self, obj) -> dict | None:
        if obj.status != "done":
            return None
        from inference.presenters import triage_view

        t = triage_view(obj)
        return {
            k: t[k]
            for k in (
                "tier",
                "label",
                "advice",
                "reason",
                "abstain",
                "thresholds",
                "urgent_probability",
                "malignant_probability",
                "unfamiliar_score",
            )
        }


class PredictionRequestSerializer(serializers.Serializer):
    photo = serializers.IntegerField()
    force = serializers.BooleanField(required=False, default=False)


class AssessmentSerializer(serializers.ModelSerializer):
    sub_class = serializers.SlugRelatedField(
        slug_field="code", queryset=SubClass.objects.all(), required=False, allow_null=True
    )
    doctor = serializers.CharField(source="doctor.username", read_only=True)

    class Meta:
        model = DoctorAssessment
        fields = ["id", "case", "photo", "prediction", "doctor", "agrees", "sub_class", "note", "created_at"]
        read_only_fields = ["case", "prediction", "doctor", "created_at"]
        extra_kwargs = {"photo": {"required": True, "allow_null": False}}

    def validate(self, attrs):
        sub = attrs.get("sub_class")
        if sub is not None and isinstance(self.initial_data.get("sub_class"), str):
            # the code is unique per taxonomy: prefer the active model's taxonomy
            from ..services import model_active_for

            active = model_active_for()
            if active:
                attrs["sub_class"] = SubClass.objects.filter(taxonomy=active.taxonomy, code=sub.code).first() or sub
        return attrs


class TrainingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "name",
            "taxonomy",
            "label_sources",
            "config",
            "status",
            "progress",
            "cancel_requested",
            "n_cases",
            "n_photos",
            "log",
            "error",
            "model_version",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [f for f in fields if f not in ("name", "label_sources", "config")]

    label_sources = serializers.ListField(child=serializers.ChoiceField(choices=LabelSource.choices), allow_empty=False)
