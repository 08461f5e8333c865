"""Templates are stored encrypted: the database holds no plaintext template."""

import stat

import numpy as np
import pytest
from sqlalchemy import select

from facewarden.adapters.crypto import DecryptionFailed, TemplateKeyError, WrongKey, parse_key
from facewarden.adapters.storage.tables import Face, Media
from facewarden.config import Settings
from facewarden.services.app import Facewarden, template_aad

from conftest import GALLERY, PG_ADMIN_URL, add_source


def all_db_bytes(settings: Settings) -> bytes:
    files = sorted(settings.data_dir.glob("facewarden.db*"))
    assert files, "no SQLite files found"
    return b"".join(f.read_bytes() for f in files)


@pytest.mark.skipif(bool(PG_ADMIN_URL), reason="scans the SQLite file itself")
def test_database_file_holds_no_plaintext_template(fw, admin, pipeline):
    from facewarden.adapters.imaging import decode_image

    add_source(fw, admin)
    fw.ingest.run(admin, [GALLERY / "obama.jpg"], "press")
    image = decode_image((GALLERY / "obama.jpg").read_bytes(), max_pixels=10**8)
    # The template ingest stored: made by the ingest pipeline (its own detector's box).
    known = fw.models.ingest_pipeline.process(image).faces[0].descriptor.astype("<f4")
    fw.engine.dispose()
    blob = all_db_bytes(fw.settings)
    assert known.tobytes()[:16] not in blob
    assert known.astype("<f8").tobytes()[:16] not in blob
    # and it is in the database, encrypted: decrypting the row gives the known template
    with fw.sessions() as s:
        face, media = s.execute(select(Face, Media).join(Media)).one()
    aad = template_aad(media.sha256, face.face_index)
    plain = fw.cipher.decrypt_template(face.template, aad, face.key_id)
    assert np.allclose(plain, known, atol=1e-6)


def test_key_file_is_private(fw):
    mode = fw.settings.resolved_key_file.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert len(parse_key(fw.settings.resolved_key_file.read_text())) == 32


def test_wrong_key_cannot_read_templates(fw, admin, settings):
    add_source(fw, admin)
    fw.ingest.run(admin, [GALLERY / "obama.jpg"], "press")
    other = Settings(**settings.model_dump(exclude={"template_key"}), template_key="ab" * 32)
    with pytest.raises(WrongKey, match=fw.cipher.key_id):
        Facewarden(other, fw.pipeline)


def test_template_swapped_between_rows_fails_to_decrypt(fw, admin):
    add_source(fw, admin)
    fw.ingest.run(admin, [GALLERY / "obama.jpg", GALLERY / "biden.jpg"], "press")
    with fw.sessions() as s:
        (f1, m1), (f2, _) = s.execute(select(Face, Media).join(Media).order_by(Face.id)).all()
    with pytest.raises(DecryptionFailed):
        fw.cipher.decrypt_template(f2.template, template_aad(m1.sha256, f1.face_index), f2.key_id)


def test_key_from_environment_and_bad_keys(tmp_path, database_url, pipeline):
    s = Settings(data_dir=tmp_path / "d", database_url=database_url, template_key="cd" * 32)
    app, _ = Facewarden.init(s, pipeline=pipeline)
    assert not s.resolved_key_file.exists()
    app.engine.dispose()
    with pytest.raises(TemplateKeyError):
        parse_key("too-short")
    with pytest.raises(TemplateKeyError, match="32 bytes"):
        parse_key("YWJj")
