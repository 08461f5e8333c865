"""End-to-end ingest throughput (1 and 2 workers) and search latency on real LFW images.

    .venv/bin/python bench/ingest_search.py --data ../shared/data/lfw --limit 600

Ingest: images/s and faces/s through the whole pipeline (decode, HOG detect, align, embed,
encrypt, store, index). Search: end-to-end latency of ``SearchService.search`` (decode,
detect, embed, index, database re-check, audit write) for probes drawn from the gallery.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, write_result

from facewarden.config import Settings
from facewarden.services.app import Facewarden

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def images(data: Path, limit: int) -> list[Path]:
    found = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return found[:limit]


def run(files: list[Path], workers: int, probes: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(data_dir=Path(tmp) / "fw", database_url=None, workers=workers)
        fw, _ = Facewarden.init(s, admin_name="bench")
        actor = fw.actor(name="bench")
        fw.sources.add(
            actor,
            "bench",
            lawful_basis="benchmark",
            purpose="benchmark",
            jurisdiction="US",
            retention="1d",
        )
        t0 = time.perf_counter()
        summary = fw.ingest.run(actor, files, "bench", workers=workers)
        elapsed = time.perf_counter() - t0
        result: dict[str, object] = {
            "workers": workers,
            "images": summary.images,
            "faces": summary.faces,
            "skipped": len(summary.skipped),
            "seconds": round(elapsed, 2),
            "images_per_s": round(summary.images / elapsed, 2),
            "faces_per_s": round(summary.faces / elapsed, 2),
        }
        if probes:
            fw.cases.open(
                actor,
                "BENCH",
                purpose="benchmark",
                legal_basis="benchmark",
                authorisation="benchmark",
            )
            latencies = []
            for path in files[:probes]:
                data = path.read_bytes()
                t = time.perf_counter()
                fw.search.search(actor, data, case="BENCH")
                latencies.append((time.perf_counter() - t) * 1000)
            result["search"] = {
                "gallery_faces": summary.faces,
                "probes": len(latencies),
                "p50_ms": round(percentile(latencies, 50), 1),
                "p99_ms": round(percentile(latencies, 99), 1),
            }
        fw.close()
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("bench/results/ingest_search.json"))
    args = ap.parse_args()
    files = images(args.data, args.limit)
    if not files:
        sys.exit(f"no images under {args.data}")
    runs = [run(files, w, args.probes if w == args.workers[-1] else 0) for w in args.workers]
    write_result(args.out, {"dataset": str(args.data), "limit": args.limit, "runs": runs})


if __name__ == "__main__":
    main()
