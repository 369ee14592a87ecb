"""factory_boy factories of the inference models tests build directly: model versions without an
artefact on disk, finished predictions and their heat maps, training runs."""

import io

import factory
from django.utils import timezone

from inference.models import (
    GradCamOverlay,
    ModelStatus,
    ModelVersion,
    Prediction,
    PredictionStatus,
    TargetKind,
    TrainingRun,
)
from tests.factories import image_bytes


def _default_taxonomy():
    from annotation.services import taxonomy_load_default

    return taxonomy_load_default()


RANKED = [
    {"sub_class": "mel", "meta_class": "melanocytic", "probability": 0.62, "fine_probability": 0.6},
    {"sub_class": "nv", "meta_class": "melanocytic", "probability": 0.30, "fine_probability": 0.3},
    {"sub_class": "bkl", "meta_class": "keratinocytic", "probability": 0.05, "fine_probability": 0.05},
    {"sub_class": "bcc", "meta_class": "keratinocytic", "probability": 0.03, "fine_probability": 0.05},
]


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A registered model whose artefact_path points nowhere (tests that never load the weights);
    ``status=ModelStatus.ACTIVE`` also sets activated_at."""

    class Meta:
        model = ModelVersion

    name = "tiny test model"
    taxonomy = factory.LazyFunction(_default_taxonomy)
    artefact_path = factory.Sequence(lambda n: f"test-models/{n}")
    status = ModelStatus.CANDIDATE
    activated_at = factory.LazyAttribute(lambda o: timezone.now() if o.status == ModelStatus.ACTIVE else None)


class PredictionFactory(factory.django.DjangoModelFactory):
    """A prediction of ``photo`` (pass it); done by default, with RANKED as its differential and, when
    done, the urgent tier a 62% melanoma gets (tier "" with ``abstain`` for a model that abstains)."""

    class Meta:
        model = Prediction

    model_version = factory.SubFactory(ModelVersionFactory)
    status = PredictionStatus.DONE
    ranked = factory.LazyFunction(lambda: [dict(r) for r in RANKED])
    finished_at = factory.LazyAttribute(lambda o: timezone.now() if o.status == PredictionStatus.DONE else None)
    tier = factory.LazyAttribute(lambda o: "urgent" if o.status == PredictionStatus.DONE else "")
    triage_reason = factory.LazyAttribute(
        lambda o: "the most likely diagnosis, Melanoma, is a high-grade malignancy" if o.tier else ""
    )


class TrainingRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrainingRun

    taxonomy = factory.LazyFunction(_default_taxonomy)
    label_sources = factory.LazyFunction(lambda: ["histopathology"])


class GradCamOverlayFactory(factory.django.DjangoModelFactory):
    """The top sub-class's heat map of ``prediction`` (pass it), a small PNG."""

    class Meta:
        model = GradCamOverlay

    target_kind = TargetKind.SUB
    target = "mel"
    image = factory.django.FileField(from_func=lambda: io.BytesIO(image_bytes("PNG", (32, 32))), filename="overlay.png")
