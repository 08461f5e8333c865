"""Key rotation and audit costs on a synthetic gallery.

    .venv/bin/python bench/keys.py --size 100000

``--size`` faces (random unit templates, one media each, encrypted as ingest does) are written
to a real SQLite system of record; then ``facewarden key rotate`` re-encrypts them (timed as a
whole and without the index rebuild that follows), the audit log is verified (chain MAC and
anchors, timed per record), and the cost of appending an audit record in its own transaction
is timed with the automatic anchor check on and off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_app, percentile, write_result
from service import fill

from facewarden.config import Settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("bench/results/keys.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((args.size, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="fw-bench-keys-") as tmp:
        settings = Settings(data_dir=Path(tmp), key_rotate_batch=args.batch)
        fw, actor = bench_app(
            settings, purpose="key rotation measurement", jurisdiction="DE", retention="30d"
        )
        fill(fw, 1, vectors)
        marks: dict[str, float] = {}

        def progress(line: str) -> None:
            if line.startswith("old key"):
                marks["reencrypted"] = time.perf_counter()

        start = time.perf_counter()
        report = fw.keys.rotate(actor, progress)
        total = time.perf_counter() - start
        reencrypt = marks["reencrypted"] - start
        _, check = fw.load_templates([1, args.size])
        assert np.allclose(check, vectors[[0, -1]])

        appends: dict[str, list[float]] = {"with_anchor_check": [], "without": []}
        anchors = fw.audit.anchors
        for n in range(2 * args.records):  # interleaved: no order effect
            label = ("with_anchor_check", "without")[n % 2]
            fw.audit.anchors = anchors if label == "with_anchor_check" else None
            t = time.perf_counter()
            fw.audit.record(actor, "bench.append")
            appends[label].append(1000 * (time.perf_counter() - t))
        fw.audit.anchors = anchors
        start = time.perf_counter()
        verified = fw.audit.verify()
        verify_s = time.perf_counter() - start
        assert verified.ok, verified
        anchor_lines = len(settings.resolved_anchor_file.read_text().splitlines())
        fw.close()
    result = {
        "faces": args.size,
        "batch": args.batch,
        "rotated_faces": report["faces"],
        "rotate_total_s": round(total, 2),
        "reencrypt_s": round(reencrypt, 2),
        "reencrypt_faces_per_s": round(args.size / reencrypt),
        "audit_records": verified.records,
        "audit_verify_s": round(verify_s, 3),
        "audit_verify_us_per_record": round(1e6 * verify_s / verified.records, 1),
        "anchors_written": anchor_lines,
        "audit_append_ms": {
            k: {"p50": round(percentile(v, 50), 3), "p99": round(percentile(v, 99), 3)}
            for k, v in appends.items()
        },
    }
    write_result(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
