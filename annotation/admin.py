from django.contrib import admin

from .models import Case, DiagnosisLabel, LabelChange, MetaClass, Patient, Photo, SubClass, Taxonomy


class SubClassInline(admin.TabularInline):
    model = SubClass
    extra = 0


@admin.register(Taxonomy)
class TaxonomyAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "is_default", "created_at"]


@admin.register(MetaClass)
class MetaClassAdmin(admin.ModelAdmin):
    list_display = ["code", "display_name", "taxonomy"]
    inlines = [SubClassInline]


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["code", "sex", "birth_year"]
    search_fields = ["code"]


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["id", "external_id", "patient", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["external_id", "patient__code"]
    raw_id_fields = ["patient"]


admin.site.register(Photo)
admin.site.register(DiagnosisLabel)
admin.site.register(LabelChange)
