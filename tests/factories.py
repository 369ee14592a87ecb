"""factory_boy factories shared by every app's tests."""

import io

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from PIL import Image

from annotation import services
from annotation.models import Case, Patient


def image_bytes(fmt="JPEG", size=(64, 48), color=(180, 120, 100), mode="RGB", **save_kwargs) -> bytes:
    img = Image.new(mode, size, color)
    out = io.BytesIO()
    img.save(out, fmt, **save_kwargs)
    return out.getvalue()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-test-123")

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if create and extracted:
            group, _ = Group.objects.get_or_create(name=extracted)
            self.groups.add(group)


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    code = factory.Sequence(lambda n: f"PSN-{n:05d}")
    sex = "female"
    birth_year = 1970


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    patient = factory.SubFactory(PatientFactory)
    body_site = "back"


def make_photo(case, *, color=(180, 120, 100), size=(64, 48), user=None, modality="clinical", fmt="JPEG"):
    return services.photo_attach(
        case=case,
        data=image_bytes(fmt, size, color),
        filename=f"p{color}.{fmt.lower()}",
        uploaded_by=user,
        modality=modality,
        run_hooks=False,
    )
