from rest_framework import serializers

from ..models import (
    Case,
    DiagnosisLabel,
    LabelChange,
    LabelSource,
    MetaClass,
    Modality,
    Patient,
    Photo,
    SubClass,
    Taxonomy,
)


class PatientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["id", "code", "sex", "birth_year", "created_at"]


class SubClassSerializer(serializers.ModelSerializer):
    meta_class = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = SubClass
        fields = ["id", "code", "display_name", "meta_class", "malignancy_grade"]


class MetaClassSerializer(serializers.ModelSerializer):
    sub_classes = SubClassSerializer(many=True, read_only=True)

    class Meta:
        model = MetaClass
        fields = ["id", "code", "display_name", "sub_classes"]


class TaxonomySerializer(serializers.ModelSerializer):
    meta_classes = MetaClassSerializer(many=True, read_only=True)

    class Meta:
        model = Taxonomy
        fields = ["id", "name", "version", "description", "is_default", "created_at", "meta_classes"]


class LabelSerializer(serializers.ModelSerializer):
    sub_class = serializers.SlugRelatedField(slug_field="code", read_only=True)
    signed_by = serializers.StringRelatedField()

    class Meta:
        model = DiagnosisLabel
        fields = [
            "id",
            "case",
            "sub_class",
            "source",
            "confirmed",
            "report_text",
            "signed_by",
            "signed_at",
            "updated_at",
        ]


class LabelWriteSerializer(serializers.Serializer):
    case = serializers.PrimaryKeyRelatedField(queryset=Case.objects.all())
    sub_class = serializers.CharField(help_text="Sub-class code of the default taxonomy.")
    source = serializers.ChoiceField(choices=LabelSource.choices)
    report_text = serializers.CharField(required=False, allow_blank=True)
    note = serializers.CharField(required=False, allow_blank=True)


class LabelChangeSerializer(serializers.ModelSerializer):
    old_sub_class = serializers.SlugRelatedField(slug_field="code", read_only=True)
    new_sub_class = serializers.SlugRelatedField(slug_field="code", read_only=True)
    changed_by = serializers.StringRelatedField()

    class Meta:
        model = LabelChange
        fields = ["id", "source", "old_sub_class", "new_sub_class", "changed_by", "changed_at", "note"]


class PhotoSerializer(serializers.ModelSerializer):
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = Photo
        fields = [
            "id",
            "case",
            "modality",
            "width",
            "height",
            "sha256",
            "original_name",
            "acquired_at",
            "created_at",
            "file_url",
        ]
        read_only_fields = fields

    def get_file_url(self, obj) -> str:
        from django.urls import reverse

        return reverse("annotation:photo_file", args=[obj.pk])


class PhotoUploadSerializer(serializers.Serializer):
    case = serializers.PrimaryKeyRelatedField(queryset=Case.objects.all())
    file = serializers.FileField()
    modality = serializers.ChoiceField(choices=Modality.choices, default=Modality.CLINICAL)
    acquired_at = serializers.DateTimeField(required=False, allow_null=True)


class CaseSerializer(serializers.ModelSerializer):
    patient_code = serializers.CharField(write_only=True, required=False)
    patient = PatientSerializer(read_only=True)
    labels = LabelSerializer(many=True, read_only=True)
    photos = PhotoSerializer(many=True, read_only=True)

    class Meta:
        model = Case
        fields = [
            "id",
            "external_id",
            "patient",
            "patient_code",
            "body_site",
            "age_at_visit",
            "clinical_history",
            "status",
            "exclusion_reason",
            "exclusion_note",
            "created_at",
            "labels",
            "photos",
        ]
        read_only_fields = ["status", "exclusion_reason", "exclusion_note", "created_at", "external_id"]


class CaseListSerializer(serializers.ModelSerializer):
    patient_code = serializers.CharField(source="patient.code", read_only=True)
    diagnosis = serializers.CharField(source="diagnosis_code", read_only=True, allow_null=True)
    diagnosis_confirmed = serializers.BooleanField(read_only=True, allow_null=True)
    photo_count = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = Case
        fields = [
            "id",
            "external_id",
            "patient_code",
            "body_site",
            "status",
            "diagnosis",
            "diagnosis_confirmed",
            "photo_count",
            "created_at",
        ]
