"""Bad input gets a clear per-file error and never stops or corrupts the rest of the batch."""

import io
import struct
import zipfile
import zlib

import pytest
from PIL import Image

from facewarden.adapters.imaging import decode_image
from facewarden.core.errors import MediaError
from facewarden.services.app import Facewarden

from conftest import GALLERY, REFERENCE, add_source


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG that declares 10^10 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def bad_batch(tmp_path):
    good = (GALLERY / "obama.jpg").read_bytes()
    d = tmp_path / "batch"
    d.mkdir()
    (d / "good.jpg").write_bytes(good)
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 200)
    (d / "notes.jpg").write_text("this is not an image\n" * 10)
    (d / "empty.png").write_bytes(b"")
    (d / "bomb.png").write_bytes(png_bomb())
    (d / "readme.txt").write_text("ignore me")
    with zipfile.ZipFile(d / "archive.zip", "w") as zf:
        zf.writestr("inside/biden.jpg", (GALLERY / "biden.jpg").read_bytes())
        zf.writestr("../escape.jpg", good)
        zf.writestr("/etc/absolute.jpg", good)
        zf.writestr("bomb.jpg", b"\x00" * 5_000_000, compress_type=zipfile.ZIP_DEFLATED)
    (d / "broken.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    return d


EXPECTED_CODES = {
    "truncated.jpg": {"truncated", "corrupt"},
    "corrupt.jpg": {"not_an_image", "corrupt"},
    "notes.jpg": {"not_an_image"},
    "empty.png": {"empty"},
    "bomb.png": {"decompression_bomb"},
    "readme.txt": {"not_an_image"},
    "../escape.jpg": {"unsafe_archive_path"},
    "/etc/absolute.jpg": {"unsafe_archive_path"},
    "bomb.jpg": {"zip_bomb"},
    "broken.zip": {"bad_archive"},
}


def test_each_bad_input_class_gets_its_clear_error(fw, admin, bad_batch):
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [bad_batch], "press")
    by_name = {}
    for s in summary.skipped:
        name = s.path.split("!", 1)[1] if "!" in s.path else s.path.rsplit("/", 1)[-1]
        by_name[name] = s
    assert set(by_name) == set(EXPECTED_CODES), by_name
    for name, codes in EXPECTED_CODES.items():
        assert by_name[name].code in codes, (name, by_name[name])
        assert by_name[name].reason
    # the good file and the good archive member were still ingested, fully
    assert summary.images == 2 and summary.faces == 2
    from sqlalchemy import select

    from facewarden.adapters.storage.tables import Media

    with fw.sessions() as session:
        paths = sorted(session.scalars(select(Media.path)))
    assert paths == [f"{bad_batch}/archive.zip!inside/biden.jpg", f"{bad_batch}/good.jpg"]
    assert fw.stats()["faces"] == 2 == len(fw.index)


def test_huge_image_is_refused_by_pixel_limit():
    buf = io.BytesIO()
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    with pytest.raises(MediaError) as err:
        decode_image(buf.getvalue(), max_pixels=1_000_000)
    assert err.value.code == "too_large"
    assert "3000x2000" in err.value.message or "pixels" in err.value.message


def test_file_size_limit(tmp_path, database_url, pipeline, admin_settings_factory):
    fw = admin_settings_factory(max_file_bytes=10_000)
    actor = fw.actor(name="admin")
    add_source(fw, actor)
    summary = fw.ingest.run(actor, [GALLERY / "obama.jpg"], "press")
    assert [s.code for s in summary.skipped] == ["too_large"]


@pytest.fixture
def admin_settings_factory(tmp_path, database_url, pipeline):
    from conftest import make_settings

    def make(**kw) -> Facewarden:
        app, _ = Facewarden.init(
            make_settings(tmp_path / "lim", database_url, **kw), pipeline=pipeline
        )
        return app

    return make


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_supported_format_decodes_with_a_face(fw, admin, tmp_path, fmt):
    img = Image.open(REFERENCE / "obama.jpg").convert("RGB")
    path = tmp_path / f"obama.{fmt.lower()}"
    img.save(path, fmt)
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [path], "press")
    assert summary.images == 1 and summary.faces == 1, summary.skipped


def test_exif_orientation_is_applied(fw, admin, tmp_path, pipeline):
    img = Image.open(REFERENCE / "obama.jpg").convert("RGB").rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": undoes the rotation above
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    upright = decode_image(path.read_bytes(), max_pixels=10**8)
    assert upright.shape[:2] == (1137, 910)
    assert len(pipeline.process(upright).faces) == 1
    # without the tag the face lies on its side and the frontal detector finds nothing
    from facewarden.adapters.models.registry import build_detector

    sideways = tmp_path / "sideways.jpg"
    img.save(sideways)
    on_its_side = decode_image(sideways.read_bytes(), max_pixels=10**8)
    assert on_its_side.shape[:2] == (910, 1137)
    assert build_detector("hog", 1).detect(on_its_side) == []


def test_missing_path_is_reported(fw, admin, tmp_path):
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [tmp_path / "nope"], "press")
    assert [s.code for s in summary.skipped] == ["missing"]
