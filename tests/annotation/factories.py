"""factory_boy factories of the annotation models tests build directly (boxes and their annotations,
group assignments). Patients, cases and photos: tests/factories.py, shared by every app."""

import factory

from annotation.models import Assignment, Box, PhotoAnnotation
from derm_portal import roles
from tests.factories import UserFactory


class PhotoAnnotationFactory(factory.django.DjangoModelFactory):
    """One annotator's (draft) annotation of a photo; pass ``photo``."""

    class Meta:
        model = PhotoAnnotation

    annotator = factory.SubFactory(UserFactory, role=roles.ANNOTATOR)


class BoxFactory(factory.django.DjangoModelFactory):
    """A box in the pixels of an ``image_width`` x ``image_height`` copy of the annotation's photo;
    pass ``annotation`` and a ``sub_class`` or ``meta_class``."""

    class Meta:
        model = Box

    photo = factory.SelfAttribute("annotation.photo")
    annotator = factory.SelfAttribute("annotation.annotator")
    x0, y0, x1, y1 = 0, 0, 10, 10
    image_width = factory.SelfAttribute("photo.width")
    image_height = factory.SelfAttribute("photo.height")


class AssignmentFactory(factory.django.DjangoModelFactory):
    """A photo put in an annotator group's queue; pass ``photo`` and ``group``."""

    class Meta:
        model = Assignment
