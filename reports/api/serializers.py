from rest_framework import serializers

from ..models import ReaderStudy, Reading


class ReaderStudySerializer(serializers.ModelSerializer):
    n_cases = serializers.IntegerField(read_only=True)
    n_readers = serializers.IntegerField(read_only=True)
    model_version = serializers.StringRelatedField()

    class Meta:
        model = ReaderStudy
        fields = [
            "id",
            *ReaderStudy.SETTINGS,
            "status",
            "created_at",
            "opened_at",
            "closed_at",
            "n_cases",
            "n_readers",
        ]


class StudyReadingSerializer(serializers.ModelSerializer):
    """Coordinator view of a reading (with the reference standard)."""

    reader = serializers.CharField(source="study_reader.user.username")
    experience = serializers.CharField(source="study_reader.experience")
    case_number = serializers.IntegerField(source="study_case.number")
    case_reference = serializers.CharField(source="study_case.case.reference")
    truth_sub_class = serializers.CharField(source="study_case.truth_sub_class.code")

    class Meta:
        model = Reading
        fields = [
            "id",
            "reader",
            "experience",
            "session",
            "case_number",
            "case_reference",
            "truth_sub_class",
            "answer",
            "confidence",
            "comment",
            "served_at",
            "answered_at",
            "server_ms",
            "active_ms",
            "revisions",
        ]


class OwnReadingSerializer(serializers.ModelSerializer):
    """A reader's own answer: no truth, no case id, no model output."""

    study = serializers.IntegerField(source="study_reader.study_id")
    case_number = serializers.IntegerField(source="study_case.number")

    class Meta:
        model = Reading
        fields = ["id", "study", "session", "case_number", "answer", "confidence", "comment", "answered_at"]
