"""Start-up costs as a user meets them: ``facewarden --help``, a one-image ingest and a
200-image ingest into a fresh data directory (wall clock, whole command), against stock dlib
in one process doing the same detection and descriptors.

    .venv/bin/python bench/startup.py --data ../shared/data/lfw

The model cache is warm for every timed run (one untimed ingest converts the models first).
Each figure is the median of ``--repeat`` runs, labelled with the load average: they mean
something only on an idle machine (or one where the bench runs at the highest priority:
``setsid bash -c 'echo -19 > /proc/self/autogroup; exec nice -n -19 ...'``, as root).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

EXE = Path(sys.executable).parent / "facewarden"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t


def ingest_wall(files: list[Path], env: dict[str, str], tmp: Path, tag: str) -> float:
    """Seconds for init + source add + ingest of ``files`` into a new data directory; only
    the ingest command is timed."""
    data = tmp / f"data-{tag}"
    inbox = tmp / f"in-{tag}"
    inbox.mkdir()
    for f in files:
        shutil.copy(f, inbox / f"{f.parent.name}-{f.name}")
    e = env | {"FACEWARDEN_DATA_DIR": str(data), "XDG_CONFIG_HOME": str(tmp / f"cfg-{tag}")}
    subprocess.run([str(EXE), "init"], env=e, check=True, capture_output=True)
    subprocess.run(
        [
            str(EXE),
            "source",
            "add",
            "bench",
            "--lawful-basis",
            "benchmark",
            "--purpose",
            "bench",
            "--jurisdiction",
            "us",
            "--retention",
            "1d",
        ],
        env=e,
        check=True,
        capture_output=True,
    )
    return timed([str(EXE), "ingest", str(inbox), "--source", "bench", "--json"], e)


STOCK = """
import sys, dlib, numpy as np, face_recognition_models as m
from pathlib import Path
from PIL import Image
d = Path(m.__file__).parent / "models"
det = dlib.get_frontal_face_detector()
sp = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))
faces = 0
for p in sys.argv[1:]:
    img = np.asarray(Image.open(p).convert("RGB"))
    for r in det(img, 1):
        net.compute_face_descriptor(dlib.get_face_chip(img, sp(img, r)))
        faces += 1
print(faces)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/results/startup.json"))
    args = ap.parse_args()
    files = sorted(args.data.rglob("*.jpg"))[: args.images]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env = os.environ | {"FACEWARDEN_MODEL_CACHE": str(tmp / "models")}
        env.pop("FACEWARDEN_TOKEN", None)
        ingest_wall(files[:1], env, tmp, "warm-up")  # converts the models once
        load = [os.getloadavg()[0]]
        help_s = [timed([str(EXE), "--help"], env) for _ in range(args.repeat)]
        one_s = [ingest_wall(files[:1], env, tmp, f"one{i}") for i in range(args.repeat)]
        load.append(os.getloadavg()[0])
        many = [ingest_wall(files, env, tmp, f"many{i}") for i in range(args.repeat)]
        stock_runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            stock = subprocess.run(
                [sys.executable, "-c", STOCK, *map(str, files)], capture_output=True, text=True
            )
            stock_runs.append(time.perf_counter() - t0)
        load.append(os.getloadavg()[0])
        many_s, stock_s = statistics.median(many), statistics.median(stock_runs)
    write_result(
        args.out,
        {
            "note": "wall clock of whole commands, warm model cache; valid only at low load",
            "load_average_1min": [round(x, 2) for x in load],
            "help_s_median": round(statistics.median(help_s), 3),
            "help_s": [round(x, 3) for x in help_s],
            "one_image_ingest_s_median": round(statistics.median(one_s), 3),
            "one_image_ingest_s": [round(x, 3) for x in one_s],
            "images": len(files),
            "ingest_s_median": round(many_s, 2),
            "ingest_s": [round(x, 2) for x in many],
            "stock_dlib_one_process_s_median": round(stock_s, 2),
            "stock_dlib_one_process_s": [round(x, 2) for x in stock_runs],
            "stock_dlib_faces": int(stock.stdout.strip() or 0),
            "speed_up_over_stock_dlib": round(stock_s / many_s, 2),
        },
    )


if __name__ == "__main__":
    main()
