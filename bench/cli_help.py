"""``facewarden --help`` start-up, A/B: two installed ``facewarden`` commands (for example
main's and a branch's) run alternately, so that both meet the same machine load.

    .venv/bin/python bench/cli_help.py --a /work/main/.venv/bin/facewarden \\
        --b .venv/bin/facewarden --repeat 15 --out bench/results/cli_help_split.json

Each figure is labelled with the load average: they mean something only side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result


def timed(exe: str) -> float:
    t = time.perf_counter()
    subprocess.run([exe, "--help"], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", required=True, help="The first facewarden command (before).")
    parser.add_argument("--b", required=True, help="The second facewarden command (after).")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cli_help_split.json"))
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"a": [], "b": []}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeat):
        runs["a"].append(timed(args.a))
        runs["b"].append(timed(args.b))
    write_result(
        args.out,
        {
            "a": args.a,
            "b": args.b,
            "repeat": args.repeat,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "a_help_s_median": round(statistics.median(runs["a"]), 3),
            "b_help_s_median": round(statistics.median(runs["b"]), 3),
            "a_help_s": [round(x, 3) for x in runs["a"]],
            "b_help_s": [round(x, 3) for x in runs["b"]],
        },
    )


if __name__ == "__main__":
    main()
