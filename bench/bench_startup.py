"""How fast `cadence --help`, `--version`, `train --help` and `import cadence` answer: wall seconds of fresh
interpreters, medians over repeats, interleaved (A B A B ...) with an optional reference source tree.

    python bench/bench_startup.py                       # this tree
    python bench/bench_startup.py --reference OLD/src   # this tree against another checkout's src/

Writes bench/results/startup.json with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
CASES = {
    "cadence --help": ["-m", "cadence", "--help"],
    "cadence --version": ["-m", "cadence", "--version"],
    "cadence train --help": ["-m", "cadence", "train", "--help"],
    "import cadence": ["-c", "import cadence"],
}


def seconds(src: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "100"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="another checkout's src/ directory")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    trees = {"this tree": SRC, **({"reference": args.reference.resolve()} if args.reference else {})}
    load_before = os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {t: {c: [] for c in CASES} for t in trees}
    for _ in range(args.repeats):
        for case, argv in CASES.items():
            for tree, src in trees.items():  # interleaved, so both see the same load
                times[tree][case].append(seconds(src, argv))
    medians = {t: {c: statistics.median(v) for c, v in cases.items()} for t, cases in times.items()}
    result = {"load_before": load_before, "load_after": os.getloadavg(), "repeats": args.repeats}
    result |= {"medians_s": medians, "all_s": times}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "startup.json").write_text(json.dumps(result, indent=1) + "\n")
    after = result["load_after"][0]
    print(f"load average before {load_before[0]:.2f}, after {after:.2f}; medians of {args.repeats}")
    for case in CASES:
        line = f"{case:24} this tree {medians['this tree'][case]:6.2f} s"
        if "reference" in medians:
            ref = medians["reference"][case]
            line += f"   reference {ref:6.2f} s   {ref / medians['this tree'][case]:5.1f}x faster"
        print(line)


if __name__ == "__main__":
    main()
