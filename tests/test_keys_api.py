"""Over a real server: a key error is a 503 with its code and the key id, never a 500; the
server writes audit anchors to its log and to the anchor file."""

import json

import httpx
import pytest
from sqlalchemy import create_engine, text
from webserver import running_server

from conftest import PG_ADMIN_URL, PROBES

pytestmark = pytest.mark.slow  # a real server process


def upload(path):
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


@pytest.mark.skipif(bool(PG_ADMIN_URL), reason="edits the SQLite file the server uses")
def test_data_under_an_unknown_key_is_a_503_naming_it(tmp_path, pipeline):
    with running_server(tmp_path, pipeline, FACEWARDEN_AUDIT_ANCHOR_EVERY="1") as server:
        inv = server.client("ines")
        search = {"files": upload(PROBES / "obama1.jpg"), "data": {"case": "CASE-1"}}
        assert inv.post("/api/v1/search", **search).status_code == 200
        anchors = server.data_dir / "audit-anchors.log"
        last = json.loads(anchors.read_text().splitlines()[-1])
        assert f"audit anchor seq={last['seq']}" in server.log.read_text()

        engine = create_engine(f"sqlite:///{server.data_dir / 'facewarden.db'}")
        with engine.begin() as conn:
            conn.execute(text("UPDATE faces SET key_id = 'feedfacefeedface'"))
        engine.dispose()
        r = inv.post("/api/v1/search", **search)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "key_missing" and "feedfacefeedface" in error["message"]
        assert httpx.get(server.url + "/healthz").status_code == 200
