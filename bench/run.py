"""`make bench`: run every claim (online, mini-batch, full-batch) in one process, write results/<claim>.json
and print one table: median (min-max) over interleaved rounds, Cadence's speed-up over each reference round by
round, and % of the arithmetic ceiling (ceiling.py)."""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.table import Table

import bench_busy
import bench_fullbatch
import bench_minibatch
import bench_online
from common import REPEATS, ratios, write

CLAIMS = {"online": bench_online, "mini-batch": bench_minibatch, "full-batch": bench_fullbatch}
EXTRA = {"busy": bench_busy}  # claims with their own printout


def _span(median: float, lo: float, hi: float, fmt: str) -> str:
    return f"{fmt.format(median)} ({fmt.format(lo)}-{fmt.format(hi)})"


def _speedup(ours: dict, theirs: dict, unit: str) -> str:
    """Cadence's speed-up over a reference, round by round (both measured in the same round)."""
    r = ratios(ours.get("rounds") or [], theirs.get("rounds") or [], higher_is_better=unit == "samples_per_s")
    return _span(r["median"], r["min"], r["max"], "{:.2f}x") if r else "-"


def table(results: dict[str, dict]) -> Table:
    t = Table(
        title=f"Fashion-MNIST, MLP 784-128-64-10, SGD; median (min-max) of {REPEATS} interleaved rounds, one run"
    )
    for col in ("claim", "system", "throughput", "cadence speed-up", "% of ceiling", "test acc", "threads"):
        t.add_column(col, justify="left" if col in ("claim", "system") else "right")
    for claim, result in results.items():
        rows = result["rows"]
        unit = "seconds_per_update" if claim == "full-batch" else "samples_per_s"
        for r in rows:
            value, acc = r.get(unit), r.get("test_accuracy")
            if value is None:
                t.add_row(claim, r["system"], r.get("note", "-"), "-", "-", "", "")
                continue
            if unit == "samples_per_s":
                shown = _span(value, r["min"], r["max"], "{:,.0f}") + " samples/s"
                share = value / result["ceiling_samples_per_s"]
            else:
                shown = _span(value, r["min"], r["max"], "{:.3f}") + " s/update"
                share = result["ceiling_seconds_per_update"] / value
            t.add_row(
                claim,
                r["system"],
                shown,
                "-" if r is rows[0] else _speedup(rows[0], r, unit),
                f"{100 * share:.0f}%",
                f"{acc:.4f}" if acc is not None else "",
                str(r.get("threads", "")),
            )
        t.add_section()
    return t


def main(claims: list[str]) -> None:
    console = Console(width=150)
    load_before = os.getloadavg()
    results, t0 = {}, time.perf_counter()
    for claim in [c for c in claims if c in EXTRA]:
        console.print(f"[bold]{claim}[/] ...")
        result = EXTRA[claim].main()
        EXTRA[claim].print_result(result)
        console.print(f"  wrote {write(claim, result.pop('rows'), result)}")
    claims = [c for c in claims if c in CLAIMS]
    for claim in claims:
        console.print(f"[bold]{claim}[/] ...")
        result = CLAIMS[claim].main()
        path = write(claim, result["rows"], {k: v for k, v in result.items() if k != "rows"})
        results[claim] = result
        console.print(f"  wrote {path}")
    console.print(table(results))
    for claim, result in results.items():
        if "ceiling_samples_per_s" in result:
            rates = ", ".join(f"{k} {v:.1f}" for k, v in result["ceiling_rates_gflops"].items())
            console.print(
                f"{claim} ceiling: {result['ceiling_samples_per_s']:,.0f} samples/s at the best of "
                f"({rates}) GFLOP/s on the 128 x 784 product"
            )
    if "online" in results:
        accs = list(results["online"]["cadence_accuracy_by_seed"].values())
        console.print(
            f"online, test accuracy after one epoch over {len(accs)} sample orders (seeds): mean "
            f"{sum(accs) / len(accs):.4f}, range {min(accs):.4f}-{max(accs):.4f}"
        )
    console.print(
        f"load average before {tuple(round(x, 2) for x in load_before)}, after "
        f"{tuple(round(x, 2) for x in os.getloadavg())} on {os.cpu_count()} cores; "
        f"{time.perf_counter() - t0:.0f} s in all"
    )


if __name__ == "__main__":
    main(sys.argv[1:] or [*CLAIMS, *EXTRA])
