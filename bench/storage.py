"""System-of-record bytes per face: ingest LFW images, then measure what the database holds.

    .venv/bin/python bench/storage.py --data ../shared/data/lfw --limit 1000

Reports the embedded SQLite database's size on disk per face (the file after a checkpoint,
and per table with its indexes, from SQLite's ``dbstat``): faces (encrypted templates and
boxes), crops, media, audit; with crops stored and not; and the mean ciphertext sizes of a
template and a crop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_app, write_result

from facewarden.adapters.storage.tables import Face, FaceCrop, Media
from facewarden.config import Settings
from facewarden.services.app import Facewarden

TABLES = ("faces", "face_crops", "media", "audit_events")


def table_bytes(fw: Facewarden) -> dict[str, int]:
    """Bytes on disk per table (its indexes included) and of the whole file."""
    raw = fw.engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = raw.cursor().execute("SELECT name, tbl_name FROM sqlite_schema").fetchall()
        owner = dict(rows)
        pages = raw.cursor().execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
        sizes = dict.fromkeys(TABLES, 0)
        for name, size in pages:
            table = owner.get(name, name)
            if table in sizes:
                sizes[table] += int(size)
    finally:
        raw.close()
    sizes["database"] = Path(fw.engine.url.database).stat().st_size
    return sizes


def run(files: list[Path], crops: bool, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fw-bench-storage-") as tmp:
        settings = Settings(data_dir=Path(tmp), store_crops=crops, workers=workers)
        fw, actor = bench_app(
            settings, purpose="storage measurement", jurisdiction="DE", retention="30d"
        )
        try:
            summary = fw.ingest.run(actor, files, "bench", workers=workers)
            with fw.sessions() as s:
                faces = s.scalar(select(func.count()).select_from(Face))
                template = s.scalar(select(func.avg(func.length(Face.template))))
                crop = s.scalar(select(func.avg(func.length(FaceCrop.data))))
                media = s.scalar(select(func.count()).select_from(Media))
            sizes = table_bytes(fw)
        finally:
            fw.close()
    return {
        "store_crops": crops,
        "images": summary.images,
        "media": media,
        "faces": faces,
        "mean_template_ciphertext_bytes": round(float(template or 0), 1),
        "mean_crop_ciphertext_bytes": round(float(crop or 0), 1),
        "table_bytes": sizes,
        "bytes_per_face": {
            k: round(v / max(faces, 1)) for k, v in sizes.items() if k != "audit_events"
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/storage.json"))
    args = ap.parse_args()
    files = sorted(args.data.rglob("*.jpg"))[: args.limit]
    runs = [run(files, crops, args.workers) for crops in (True, False)]
    write_result(
        args.out,
        {
            "dataset": str(args.data),
            "backend": "sqlite",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
