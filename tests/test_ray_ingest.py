"""Distributed ingest on a real local Ray instance: the same records as the plain ingest,
idempotent re-runs, and the same rules (source required, suppression list honoured)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import GALLERY, PROBES, add_source

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts a local Ray instance


def _templates(fw):
    ids, vecs = fw.load_templates(sorted(fw.index.ids().tolist()))
    with fw.sessions() as s:
        from facewarden.adapters.storage.tables import Face, Media

        rows = s.query(Media.sha256, Face.face_index, Face.id).join(Face).all()
    order = {fid: (sha, idx) for sha, idx, fid in rows}
    return {order[i]: v for i, v in zip(ids.tolist(), vecs, strict=True)}


def test_ray_ingest_equals_the_process_ingest_and_is_idempotent(fw, admin, tmp_path, pipeline):
    from facewarden.services.app import Facewarden

    from conftest import make_settings

    add_source(fw, admin)
    summary = fw.ingest.run(admin, [GALLERY, PROBES], "press", workers=2, ray="local")
    assert summary.images == 10 and not summary.skipped
    with fw.sessions() as s:
        from facewarden.adapters.storage.tables import AuditEvent

        start = s.query(AuditEvent).filter_by(action="ingest.start").one()
        assert '"ray": "local"' in start.details or "local" in str(start.details)
    again = fw.ingest.run(admin, [GALLERY, PROBES], "press", workers=2, ray="local")
    assert again.images == 0 and again.duplicates == 10

    plain, _ = Facewarden.init(
        make_settings(tmp_path / "plain", None), admin_name="admin", pipeline=pipeline
    )
    add_source(plain, plain.actor(name="admin"))
    plain.ingest.run(plain.actor(name="admin"), [GALLERY, PROBES], "press", workers=1)
    ray_t, plain_t = _templates(fw), _templates(plain)
    assert ray_t.keys() == plain_t.keys() and len(ray_t) == summary.faces
    for key, vec in ray_t.items():
        np.testing.assert_allclose(vec, plain_t[key], atol=1e-4)
    plain.close()


def test_ray_ingest_keeps_the_rules(fw, admin):
    from facewarden.core.errors import NotFound

    with pytest.raises(NotFound):
        fw.ingest.run(admin, [GALLERY], "no-such-source", ray="local")
