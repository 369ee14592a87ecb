from django.contrib import admin

from .models import DoctorAssessment, GradCamOverlay, ModelActivation, ModelVersion, Prediction, TrainingRun


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "taxonomy", "status", "created_at", "activated_at"]
    list_filter = ["status", "taxonomy"]
    # status changes go through services.model_activate (one active per taxonomy, logged)
    readonly_fields = ["status", "activated_at", "activated_by", "manifest", "metrics"]


@admin.register(ModelActivation)
class ModelActivationAdmin(admin.ModelAdmin):
    list_display = ["model_version", "previous", "activated_by", "activated_at"]


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "photo",
        "model_version",
        "status",
        "malignancy_grade",
        "looks_unfamiliar",
        "created_at",
        "duration_ms",
    ]
    list_filter = ["status", "model_version"]
    readonly_fields = [f.name for f in Prediction._meta.fields]


@admin.register(GradCamOverlay)
class GradCamOverlayAdmin(admin.ModelAdmin):
    list_display = ["prediction", "target_kind", "target", "rank", "box_mass"]
    exclude = ["image", "heatmap"]  # overlay images are streamed by the permission-checked view only


@admin.register(DoctorAssessment)
class DoctorAssessmentAdmin(admin.ModelAdmin):
    list_display = ["case", "photo", "doctor", "agrees", "sub_class", "created_at"]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "status", "created_by", "created_at", "model_version"]
    list_filter = ["status"]
