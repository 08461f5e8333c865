"""Video speed: seconds of video processed per second of wall time, at the default settings.

    .venv/bin/python bench/video.py \\
        --video ../shared/data/faces-small/face_recognition/examples/hamilton_clip.mp4 \\
        --gallery ../shared/data/faces-small/face_recognition/examples/lin-manuel-miranda.png

Three measurements per worker count: the scan alone (decode, sample, detect, align, embed,
track), the whole logged video search (scan plus one search per track, case record and
audit), and video ingest (scan plus storing each track's best faces). A ratio above 1.0 is
faster than real time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

from facewarden.adapters.video import VideoReader
from facewarden.config import Settings
from facewarden.services.app import Facewarden
from facewarden.services.video import scan_video


def run(video: Path, gallery: list[Path], workers: int, fps: float | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "fw", database_url=None, workers=workers)
        if fps:
            settings.video_fps = fps
        fw, _ = Facewarden.init(settings, admin_name="bench")
        actor = fw.actor(name="bench")
        fw.sources.add(
            actor, "bench", lawful_basis="benchmark", purpose="benchmark",
            jurisdiction="US", retention="1d",
        )  # fmt: skip
        if gallery:
            fw.ingest.run(actor, gallery, "bench", workers=1)
        fw.cases.open(
            actor, "BENCH", purpose="benchmark", legal_basis="benchmark",
            authorisation="benchmark",
        )  # fmt: skip
        with VideoReader(video, max_pixels=settings.max_image_pixels) as reader:
            info = reader.info
        duration = info.duration_s or 0.0

        t = time.perf_counter()
        scan = scan_video(video, fw.pipeline, settings, workers=workers)
        scan_s = time.perf_counter() - t

        t = time.perf_counter()
        result = fw.video.search(actor, video, case="BENCH", workers=workers)
        search_s = time.perf_counter() - t

        copy = Path(tmp) / f"ingest{video.suffix}"
        shutil.copy(video, copy)
        t = time.perf_counter()
        summary = fw.ingest.run(actor, [copy], "bench", workers=workers)
        ingest_s = time.perf_counter() - t
        fw.close()
    return {
        "workers": workers,
        "video": {
            "width": info.width,
            "height": info.height,
            "duration_s": round(duration, 2),
            "codec": info.codec,
            "frame_rate": round(info.frame_rate or 0, 3),
        },
        "sample_fps": scan.sample_fps,
        "frames_decoded": scan.frames_decoded,
        "frames_sampled": scan.frames_sampled,
        "detections": scan.detections,
        "tracks": len(scan.tracks),
        "scan": {"seconds": round(scan_s, 2), "video_s_per_s": round(duration / scan_s, 2)},
        "search": {
            "seconds": round(search_s, 2),
            "video_s_per_s": round(duration / search_s, 2),
            "timeline_entries": len(result.timeline),
        },
        "ingest": {
            "seconds": round(ingest_s, 2),
            "video_s_per_s": round(duration / ingest_s, 2),
            "faces_stored": summary.faces,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--video", type=Path, required=True)
    ap.add_argument("--gallery", type=Path, nargs="*", default=[])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--fps", type=float, default=None, help="Sampling rate (default: settings).")
    ap.add_argument("--out", type=Path, default=Path("bench/results/video.json"))
    args = ap.parse_args()
    runs = [run(args.video, args.gallery, w, args.fps) for w in args.workers]
    write_result(
        args.out,
        {
            "video_file": str(args.video),
            "detector": Settings().detector_setting,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
