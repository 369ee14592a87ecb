from django import forms
from django.contrib.auth import get_user_model

from derm_portal import roles

from .models import ClassLevel, ConfidenceScale, Experience, QuestionType


def _model_versions(taxonomy):
    try:
        from inference.models import ModelVersion
    except ImportError:  # pragma: no cover
        return None
    qs = ModelVersion.objects.all()
    return qs.filter(taxonomy=taxonomy) if taxonomy is not None else qs


class StudyForm(forms.Form):
    title = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    question_type = forms.ChoiceField(choices=QuestionType.choices, initial=QuestionType.BINARY)
    positive_codes = forms.MultipleChoiceField(
        required=False,
        label="Positive sub-classes (binary)",
        widget=forms.SelectMultiple(attrs={"size": 7}),
        help_text="Binary questions: which diagnoses count as positive (e.g. melanoma).",
    )
    class_level = forms.ChoiceField(
        choices=ClassLevel.choices, initial=ClassLevel.SUB, label="Answer level (multi-class)"
    )
    question_text = forms.CharField(
        max_length=300, required=False, help_text="Optional; a default is written from the question."
    )
    confidence_scale = forms.ChoiceField(
        choices=ConfidenceScale.choices, initial=ConfidenceScale.FIVE, help_text="Needed for readers' own ROC curves."
    )
    model_version = forms.ModelChoiceField(
        queryset=None, required=False, label="Compared model", empty_label="— none —"
    )
    shuffle = forms.BooleanField(required=False, initial=True, label="Shuffle the case order per reader")
    allow_back = forms.BooleanField(required=False, label="Readers may go back and change answers")
    aided_session = forms.BooleanField(
        required=False, label="Second, AI-aided session (readers see the model's differential)"
    )
    show_history = forms.BooleanField(required=False, label="Show age, body site and clinical history")

    def __init__(self, *args, taxonomy=None, **kwargs):
        super().__init__(*args, **kwargs)
        from annotation.models import SubClass

        subs = SubClass.objects.filter(taxonomy=taxonomy) if taxonomy else SubClass.objects.none()
        self.fields["positive_codes"].choices = [(s.code, f"{s.display_name} ({s.code})") for s in subs]
        mv = _model_versions(taxonomy)
        if mv is None:
            del self.fields["model_version"]
        else:
            self.fields["model_version"].queryset = mv


class CaseFilterForm(forms.Form):
    diagnosis = forms.MultipleChoiceField(
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 6}),
        help_text="Confirmed diagnosis (none selected = all).",
    )
    modality = forms.ChoiceField(
        required=False, choices=[("", "any modality"), ("clinical", "Clinical"), ("dermoscopic", "Dermoscopic")]
    )
    q = forms.CharField(required=False, label="Search", help_text="External id, body site")
    exclude_training = forms.BooleanField(
        required=False, initial=True, label="Leave out cases the model was trained on (when known)"
    )
    n = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=5000,
        label="Random sample of N",
        help_text="Empty: add all matching cases.",
    )

    def __init__(self, *args, taxonomy=None, **kwargs):
        super().__init__(*args, **kwargs)
        from annotation.models import SubClass

        subs = SubClass.objects.filter(taxonomy=taxonomy) if taxonomy else SubClass.objects.none()
        self.fields["diagnosis"].choices = [(s.code, s.display_name) for s in subs]


class InviteForm(forms.Form):
    user = forms.ModelChoiceField(queryset=None, label="Reader")
    experience = forms.ChoiceField(choices=Experience.choices, initial=Experience.RESIDENT)

    def __init__(self, *args, study=None, **kwargs):
        super().__init__(*args, **kwargs)
        User = get_user_model()
        qs = User.objects.filter(groups__name=roles.READER, is_active=True).distinct().order_by("username")
        if study is not None:
            qs = qs.exclude(study_invitations__study=study)
        self.fields["user"].queryset = qs
        self.fields["user"].label_from_instance = lambda u: f"{u.get_full_name() or u.username} ({u.username})"
