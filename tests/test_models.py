"""The dlib pipeline reproduces the reference values of the face_recognition project."""

import numpy as np
import pytest

from facewarden.adapters.imaging import decode_image
from facewarden.core.pipeline import FacePipeline

from conftest import REFERENCE


def faces_of(pipeline: FacePipeline, name: str):
    image = decode_image((REFERENCE / name).read_bytes(), max_pixels=50_000_000)
    return pipeline.process(image, enrol=False).faces


def test_hog_box_of_obama_matches_reference(pipeline):
    faces = faces_of(pipeline, "obama.jpg")
    assert len(faces) == 1
    expected = np.array([142, 617, 409, 349])
    assert np.abs(np.array(faces[0].detection.box.as_list()) - expected).max() <= 3


@pytest.mark.parametrize(
    ("other", "same"), [("obama2.jpg", True), ("obama3.jpg", True), ("biden.jpg", False)]
)
def test_reference_distances(pipeline, other, same):
    a = faces_of(pipeline, "obama.jpg")[0].descriptor
    b = faces_of(pipeline, other)[0].descriptor
    distance = float(np.linalg.norm(a - b))
    assert (distance <= 0.6) is same, distance


def test_descriptor_is_128d_float32_unit_scale(pipeline):
    face = faces_of(pipeline, "obama.jpg")[0]
    assert face.descriptor.shape == (128,) and face.descriptor.dtype == np.float32
    assert 0.5 < float(np.linalg.norm(face.descriptor)) < 1.5


def test_quality_record_is_complete(pipeline):
    q = faces_of(pipeline, "obama.jpg")[0].quality
    assert q.width > 200 and q.height > 200
    assert q.blur > 30 and q.pose == "frontal" and abs(q.yaw) < 0.35
    assert q.detector_score > 0 and q.flags == ()


def test_chip_is_150px_jpeg(pipeline):
    from io import BytesIO

    from PIL import Image

    chip = faces_of(pipeline, "obama.jpg")[0].chip_jpeg
    assert chip is not None
    assert Image.open(BytesIO(chip)).size == (150, 150)
