"""Every accepted format and pixel mode decodes to the same face; truncated data, videos sent
as photos (and photos sent as videos) get their own clear error; probes are decoded at a
bounded size and their faces capped, with a note; archives and upload names are reported
honestly."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from facewarden.adapters.imaging import decode
from facewarden.adapters.storage.tables import Media
from facewarden.core.errors import MediaError
from facewarden.services.app import Facewarden
from facewarden.services.jobs import NAME_CHARS, safe_name

from conftest import PROBES, make_settings, open_case

CLIP = Path(__file__).parent / "fixtures" / "video" / "short_hamilton_clip.mp4"
OBAMA = PROBES / "obama1.jpg"


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def variants() -> dict[str, bytes]:
    """The same photo in every awkward mode a camera, scanner or editor writes."""
    src = Image.open(OBAMA).convert("RGB")
    grey16 = Image.fromarray(np.asarray(src.convert("L")).astype(np.uint16) * 257)
    assert grey16.mode == "I;16"
    palette = src.convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "jpeg-8bit": OBAMA.read_bytes(),
        "png-16bit-grey": encode(grey16, "PNG"),
        "jpeg-cmyk": encode(src.convert("CMYK"), "JPEG", quality=95),
        "png-la": encode(src.convert("LA"), "PNG"),
        "png-rgba": encode(src.convert("RGBA"), "PNG"),
        "png-palette-transparency": encode(palette, "PNG", transparency=0),
        "tiff-16bit-grey": encode(grey16, "TIFF"),
    }


@pytest.mark.parametrize("name", sorted(variants()))
def test_each_mode_decodes_to_the_same_picture(name):
    reference = decode(OBAMA.read_bytes(), max_pixels=10**8).rgb.astype(float).mean(axis=2)
    got = decode(variants()[name], max_pixels=10**8).rgb.astype(float).mean(axis=2)
    assert got.shape == reference.shape
    # Not near-white (a clipped 16-bit image), not inverted (CMYK): close to the 8-bit grey.
    assert abs(got.mean() - reference.mean()) < 6, (got.mean(), reference.mean())


def test_each_mode_finds_the_same_face(gallery_fw, admin):
    found = {}
    for name, data in variants().items():
        result = gallery_fw.search.search(admin, data, case="CASE-1", probe_name=name)
        assert len(result.faces) == 1, name
        found[name] = result.faces[0].candidates[0].face_id if result.faces[0].candidates else None
    assert len(set(found.values())) == 1 and None not in found.values(), found


def test_truncated_data_is_refused_before_decoding():
    big = Image.open(OBAMA).convert("RGB").resize((5600, 7000))
    data = encode(big, "JPEG", quality=90)
    for cut in (len(data) // 3, len(data) - 100):
        with pytest.raises(MediaError) as err:
            decode(data[:cut], max_pixels=10**8)
        assert err.value.code == "truncated"
    png = encode(Image.open(OBAMA), "PNG")
    with pytest.raises(MediaError) as err:
        decode(png[: len(png) // 2], max_pixels=10**8)
    assert err.value.code == "truncated"


def test_a_large_probe_is_reduced_for_detection_and_still_matches(gallery_fw, admin):
    # A large photo (4000x3000) with the face in one part of it, twice its size.
    face = Image.open(OBAMA).convert("RGB")
    face = face.resize((face.width * 2, face.height * 2), Image.Resampling.BICUBIC)
    big = Image.new("RGB", (4000, 3000), (120, 130, 140))
    big.paste(face, (1500, 500))
    decoded = decode(encode(big, "JPEG"), max_pixels=10**8, max_side=1600)
    assert max(decoded.rgb.shape[:2]) <= 1600 and decoded.original_size == (4000, 3000)
    result = gallery_fw.search.search(admin, encode(big, "JPEG"), case="CASE-1")
    assert any("reduced to" in n for n in result.notes), result.notes
    assert result.faces and result.faces[0].candidates
    small = gallery_fw.search.search(admin, OBAMA.read_bytes(), case="CASE-1")
    assert result.faces[0].candidates[0].face_id == small.faces[0].candidates[0].face_id
    assert small.notes == []


def test_faces_per_probe_are_capped_with_a_note(tmp_path, database_url, pipeline, gallery_fw):
    settings = make_settings(
        gallery_fw.settings.data_dir, gallery_fw.settings.database_url, max_probe_faces=1
    )
    fw = Facewarden(settings, pipeline)
    admin = fw.actor(name="admin")
    data = (PROBES / "obama_and_biden.jpg").read_bytes()
    every = gallery_fw.search.search(fw.actor(name="admin"), data, case="CASE-1").faces
    assert len(every) >= 2
    result = fw.search.search(admin, data, case="CASE-1")
    assert len(result.faces) == 1
    note = f"{len(every)} faces detected: the largest 1 were searched, {len(every) - 1} were not"
    assert any(note in n for n in result.notes), result.notes
    # The one searched is the largest.
    area = [(f.box[1] - f.box[3]) * (f.box[2] - f.box[0]) for f in every]
    assert result.faces[0].box == every[area.index(max(area))].box
    assert result.as_dict()["notes"] == result.notes
    fw.engine.dispose()


def test_a_video_sent_as_a_photo_gets_a_hint(gallery_fw, admin):
    with pytest.raises(MediaError) as err:
        gallery_fw.search.search(admin, CLIP.read_bytes(), case="CASE-1")
    assert err.value.code == "video_not_image"
    assert "video search" in err.value.message


def test_a_photo_sent_as_a_video_is_refused_without_using_quota(gallery_fw, admin, tmp_path):
    open_case(gallery_fw, admin, ref="CASE-Q", quota=1)
    fake = tmp_path / "probe.mp4"
    fake.write_bytes(OBAMA.read_bytes())
    with pytest.raises(MediaError) as err:
        gallery_fw.video.search(admin, fake, case="CASE-Q")
    assert err.value.code == "image_not_video" and "photo search" in err.value.message
    assert gallery_fw.cases.show(admin, "CASE-Q").searches == 0
    # The one search the quota allows is still there.
    gallery_fw.search.search(admin, OBAMA.read_bytes(), case="CASE-Q")


def test_long_upload_names_keep_their_extension():
    taken: set[str] = set()
    first = safe_name("x" * 300 + ".jpg", taken)
    second = safe_name("x" * 300 + ".jpg", taken)
    assert first.endswith(".jpg") and second.endswith("-1.jpg") and first != second
    assert len(first) <= NAME_CHARS and len(second) <= NAME_CHARS
    assert safe_name("../../" + "y" * 500, taken).startswith("y")


def test_archive_copies_of_a_refused_file_are_not_called_duplicates(fw, admin, tmp_path):
    from conftest import add_source

    add_source(fw, admin)
    archive = tmp_path / "batch.zip"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(archive, "w") as zf:
        for n in range(30):
            zf.writestr(f"junk{n}.jpg", b"this is not an image at all" * 10)
        zf.writestr("dup.jpg", OBAMA.read_bytes())
        zf.writestr("dup.jpg", (PROBES / "alex_lacamoire1.jpg").read_bytes())
        zf.writestr("again.jpg", OBAMA.read_bytes())
    summary = fw.ingest.run(admin, [archive], "press")
    codes = [s.code for s in summary.skipped]
    assert codes.count("not_an_image") == 30, summary.skipped
    # Two members share a name but not their content: both are stored, labelled apart.
    assert summary.images == 2 and summary.duplicates == 1, summary
    with fw.sessions() as session:
        paths = set(session.scalars(select(Media.path)))
    assert any(p.endswith("dup.jpg [2]") for p in paths), paths
