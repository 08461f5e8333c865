"""The service's cost over the raw index: a 1:N match through facewarden (index proposes,
database re-checks and decrypts every hit) against the bare vector index, on one gallery.

    .venv/bin/python bench/service.py --data ../shared/data/lfw --size 1000000

The gallery (as in ``bench/index.py``: real LFW templates plus synthetic distractors) is
written to a real SQLite system of record (one media and one encrypted template per face, in
bulk), the FAISS index is rebuilt from it exactly as ``facewarden index rebuild`` does (timed),
and the same real queries run through ``SearchService.match`` (top 10 at the default
threshold) and through ``index.search`` alone. Then what subject access and erasure add: the
index reconciled with the database (every face id read) and an exact candidate search at the
subject threshold, for a tenth of the queries. Detection, alignment and the audit write of a
full search are not part of either (their cost is in ``bench/ingest_search.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_app, percentile, write_result
from index import gallery, real_templates

from facewarden.adapters.storage.tables import Face, Media
from facewarden.config import Settings
from facewarden.services.app import Facewarden, template_aad

CHUNK = 50_000


def fill(fw: Facewarden, source_id: int, vectors: np.ndarray) -> None:
    """One media row and one encrypted template per vector, in bulk transactions."""
    now = datetime.now(UTC)
    for start in range(0, len(vectors), CHUNK):
        ids = range(start + 1, min(len(vectors), start + CHUNK) + 1)
        shas = {i: f"{i:064x}" for i in ids}
        with fw.writes() as session, session.begin():
            session.execute(
                insert(Media),
                [
                    dict(
                        id=i,
                        source_id=source_id,
                        sha256=shas[i],
                        path=f"synthetic/{i}.jpg",
                        kind="image",
                        width=250,
                        height=250,
                        ingested_at=now,
                        expires_at=now + timedelta(days=30),
                        restricted=False,
                    )
                    for i in ids
                ],
            )
            session.execute(
                insert(Face),
                [
                    dict(
                        id=i,
                        media_id=i,
                        face_index=0,
                        top=0,
                        right=100,
                        bottom=100,
                        left=0,
                        quality={},
                        model_id=fw.model_id,
                        key_id=fw.cipher.key_id,
                        template=fw.cipher.encrypt_template(
                            vectors[i - 1], template_aad(shas[i], 0)
                        ),
                    )
                    for i in ids
                ],
            )


def timed(fn, queries) -> tuple[list[float], list]:
    fn(queries[0])  # warm-up
    latencies, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        latencies.append(1000 * (time.perf_counter() - t))
    return latencies, out


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "mean_ms": round(float(np.mean(latencies)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--templates", type=Path, default=Path(tempfile.gettempdir()) / "fw-lfw.npz")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("bench/results/service.json"))
    args = ap.parse_args()
    real, people = real_templates(args.data, args.templates)
    vectors, queries, _ = gallery(real, people, args.size, args.queries)
    with tempfile.TemporaryDirectory(prefix="fw-bench-service-") as tmp:
        fw, _ = bench_app(
            Settings(data_dir=Path(tmp)),
            purpose="service overhead measurement",
            jurisdiction="DE",
            retention="30d",
        )
        with fw.sessions() as session:
            source_id = fw.sources.get(session, "bench").id
        t = time.perf_counter()
        fill(fw, source_id, vectors)
        fill_s = time.perf_counter() - t
        del vectors
        t = time.perf_counter()
        fw.rebuild_index()
        rebuild_s = time.perf_counter() - t
        one = next(p for p in sorted(args.data.rglob("*.jpg")))
        face = fw.pipeline.process(np.asarray(Image.open(one).convert("RGB"))).faces[0]
        threshold = fw.settings.threshold
        # Both paths see every query once before timing, then alternate query by query, so
        # neither is favoured by caches the other warmed.
        raw_search = lambda q: fw.index.search(q[None, :], 10)  # noqa: E731
        match = lambda q: fw.search.match(  # noqa: E731
            dataclasses.replace(face, descriptor=q), 10, threshold
        )
        for q in queries:
            raw_search(q), match(q)
        raw, nearest, service, found = [], [], [], []
        for q in queries:
            for fn, times, out in ((raw_search, raw, nearest), (match, service, found)):
                t = time.perf_counter()
                out.append(fn(q))
                times.append(1000 * (time.perf_counter() - t))
        # Subject rights: the index reconciled with the database, then an exact search at
        # the subject threshold for up to 1,000 faces (what access and erasure do).
        t = time.perf_counter()
        fw.sync_index()
        sync_s = time.perf_counter() - t
        subject, _ = timed(
            lambda q: fw.search.match(
                dataclasses.replace(face, descriptor=q),
                1000,
                fw.settings.subject_threshold,
                searchable_only=False,
                exact=True,
            ),
            queries[: max(1, len(queries) // 10)],
        )
        hits = [len(m.candidates) for m in found]
        # Where the index's nearest face is within the threshold, the service ranks it first.
        agree = [
            bool(m.candidates) and m.candidates[0].face_id == int(ids[0][0])
            for (dists, ids), m in zip(nearest, found, strict=True)
            if dists[0][0] <= threshold
        ]
        result = {
            "dataset": str(args.data),
            "gallery": args.size,
            "queries": len(queries),
            "index": fw.index.describe(),
            "fill_system_of_record_s": round(fill_s, 1),
            "rebuild_index_from_database_s": round(rebuild_s, 1),
            "raw_index_search": summary(raw),
            "service_match": summary(service),
            "mean_candidates_returned": round(float(np.mean(hits)), 2),
            "top1_agrees_with_index": round(float(np.mean(agree)), 4) if agree else None,
            "added_cost_p50": round(percentile(service, 50) / percentile(raw, 50) - 1, 3),
            "subject_rights": {
                "reconcile_index_with_database_s": round(sync_s, 2),
                "exact_candidate_search": summary(subject),
                "queries": len(subject),
            },
        }
        fw.close()
    write_result(args.out, result)


if __name__ == "__main__":
    main()
