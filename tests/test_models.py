"""The dlib pipeline reproduces the reference values of the face_recognition project."""

import numpy as np
import pytest

from facewarden.adapters.imaging import decode_image
from facewarden.core.pipeline import FacePipeline

from conftest import GALLERY, REFERENCE


def faces_of(pipeline: FacePipeline, name: str):
    image = decode_image((REFERENCE / name).read_bytes(), max_pixels=50_000_000)
    return pipeline.process(image, enrol=False).faces


def test_hog_box_of_obama_matches_reference(pipeline):
    from facewarden.adapters.models.registry import build_detector

    hog = FacePipeline(build_detector("hog", 1), pipeline.aligner, pipeline.embedder)
    faces = faces_of(hog, "obama.jpg")
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


def test_mmod_cnn_detector_is_selectable_and_agrees_with_hog(pipeline):
    from facewarden.adapters.models.registry import build_detector

    from conftest import UNKNOWN

    image = decode_image((UNKNOWN / "Aaron_Sorkin_0001.jpg").read_bytes(), max_pixels=10**8)
    cnn = build_detector("cnn", 0).detect(image)
    hog = build_detector("hog", 1).detect(image)
    assert len(cnn) == 1 and len(hog) == 1
    c, h = cnn[0].box, hog[0].box
    inter_w = min(c.right, h.right) - max(c.left, h.left)
    inter_h = min(c.bottom, h.bottom) - max(c.top, h.top)
    inter = max(inter_w, 0) * max(inter_h, 0)
    iou = inter / (c.width * c.height + h.width * h.height - inter)
    assert iou > 0.5 and cnn[0].score > 0


def test_images_processed_together_equal_one_at_a_time_an_unreadable_one_in_place(pipeline):
    """A worker describes the faces of the images it is handed in one batch: each image's
    result is what it gets alone, in order, and an unreadable image between them is
    reported in its place without costing the others theirs."""
    from facewarden.services.processing import process_image, process_images

    first, second = ((GALLERY / name).read_bytes() for name in ("obama.jpg", "biden.jpg"))
    together = process_images(pipeline, [first, b"not an image", second], 50_000_000)
    alone = [process_image(pipeline, data, 50_000_000) for data in (first, second)]
    assert together[1].error_code is not None and not together[1].faces
    for batched, single in zip((together[0], together[2]), alone, strict=True):
        assert len(batched.faces) == len(single.faces) >= 1
        for a, b in zip(batched.faces, single.faces, strict=True):
            assert a["box"] == b["box"]
            va, vb = (np.frombuffer(f["descriptor"], "<f4") for f in (a, b))
            assert np.abs(va - vb).max() < 1e-4


def test_images_processed_together_are_not_all_held_decoded_at_once(pipeline):
    """A worker is handed a few images at a time, bounded by their encoded bytes, and a small
    file can decode to a large image (a plain PNG of a few kB, 3 MB decoded; up to
    FACEWARDEN_MAX_IMAGE_PIXELS). Describing their faces in one batch must not keep every
    decoded image of the batch in memory: the peak stays that of one image alone."""
    import io
    import tracemalloc

    from PIL import Image

    from facewarden.services.processing import process_image, process_images

    side = 1000
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 130, 140)).save(buf, format="PNG")
    plain = buf.getvalue()
    decoded = side * side * 3
    assert len(plain) * 100 < decoded  # small to hand over, large once decoded

    def peak(run):
        tracemalloc.start()
        try:
            result = run()
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one, alone = peak(lambda: [process_image(pipeline, plain, 50_000_000)])
    three, together = peak(lambda: process_images(pipeline, [plain] * 3, 50_000_000))
    assert [(r.width, r.faces, r.error_code) for r in one + three] == [(side, [], None)] * 4
    extra = (together - alone) / decoded
    assert extra < 1, f"{extra:.1f} more decoded images held at once than for one alone"
