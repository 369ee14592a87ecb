from django import forms

from .models import CaseStatus, ExclusionReason, LabelSource, Modality, Sex, SubClass


class CaseCreateForm(forms.Form):
    patient_code = forms.CharField(max_length=64, help_text="Pseudonymous code: never a name.")
    sex = forms.ChoiceField(choices=Sex.choices, initial=Sex.UNKNOWN)
    birth_year = forms.IntegerField(min_value=1880, max_value=2100, required=False)
    body_site = forms.CharField(max_length=100, required=False)
    age_at_visit = forms.IntegerField(min_value=0, max_value=130, required=False)
    clinical_history = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    modality = forms.ChoiceField(
        choices=Modality.choices, initial=Modality.CLINICAL, help_text="Modality of the photos below."
    )


class LabelForm(forms.Form):
    sub_class = forms.ModelChoiceField(queryset=SubClass.objects.none())
    source = forms.ChoiceField(choices=LabelSource.choices)
    report_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    report_file = forms.FileField(required=False)
    note = forms.CharField(max_length=500, required=False, help_text="Why it changed (kept in the history).")

    REPORT_EXTENSIONS = ("pdf", "txt", "jpg", "jpeg", "png")
    REPORT_MAX_BYTES = 20 * 1024 * 1024

    def clean_report_file(self):
        upload = self.cleaned_data.get("report_file")
        if not upload:
            return upload
        ext = upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
        if ext not in self.REPORT_EXTENSIONS:
            raise forms.ValidationError(f"{upload.name}: a pathology report must be a PDF, text file or JPEG/PNG scan.")
        if upload.size > self.REPORT_MAX_BYTES:
            raise forms.ValidationError(f"{upload.name}: the report file is over the 20 MB limit.")
        return upload

    def __init__(self, *args, taxonomy=None, allowed_sources=None, sub_classes=None, **kwargs):
        """``sub_classes``: the taxonomy's sub-classes already read (the page's shared copy), shown as
        the choices without a query; a submitted choice is still checked against the database."""
        super().__init__(*args, **kwargs)
        qs = SubClass.objects.select_related("meta_class")
        if taxonomy is not None:
            qs = qs.filter(taxonomy=taxonomy)
        field = self.fields["sub_class"]
        field.queryset = qs
        field.label_from_instance = lambda s: f"{s.meta_class.display_name} › {s.display_name} ({s.code})"
        if sub_classes is not None:
            field.choices = [("", field.empty_label)] + [(s.pk, field.label_from_instance(s)) for s in sub_classes]
        choices = [c for c in LabelSource.choices if allowed_sources is None or c[0] in allowed_sources]
        # No preselected source: confirming by histopathology must be a deliberate choice.
        self.fields["source"].choices = [("", "— source of the diagnosis —")] + choices


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=CaseStatus.choices)
    exclusion_reason = forms.ChoiceField(choices=[("", "—")] + list(ExclusionReason.choices), required=False)
    note = forms.CharField(max_length=500, required=False)


class TaxonomyImportForm(forms.Form):
    # help_text is rendered as HTML: no angle brackets in it.
    file = forms.FileField(
        help_text='JSON, e.g. {"meta_classes": {"melanocytic": ["nv", "mel"]}, "malignancy": {"nv": 1, "mel": 3}}'
    )
    name = forms.CharField(max_length=100, required=False)
    make_default = forms.BooleanField(required=False)
