"""`make bench`: run every claim (online, mini-batch, full-batch) in one process, write results/<claim>.json
and print one table of throughput, ratios to the references measured in the same run, and % of ceiling."""

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
from common import REPEATS, write

CLAIMS = {"online": bench_online, "mini-batch": bench_minibatch, "full-batch": bench_fullbatch}
EXTRA = {"busy": bench_busy}  # claims with their own printout


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(results: dict[str, dict]) -> Table:
    t = Table(title=f"Fashion-MNIST, MLP 784-128-64-10, SGD; medians of {REPEATS} repeats, one run")
    for col in ("claim", "system", "throughput", "cadence speed-up", "% of ceiling", "test acc", "threads"):
        t.add_column(col, justify="left" if col in ("claim", "system") else "right")
    for claim, result in results.items():
        rows = result["rows"]
        if claim == "full-batch":
            ours = rows[0]["seconds_per_update"]
            for r in rows:
                s = r["seconds_per_update"]
                t.add_row(
                    claim,
                    r["system"],
                    f"{s:.3f} s/update",
                    "-" if r is rows[0] else f"{s / ours:.2f}x",
                    f"{100 * result['ceiling_seconds_per_update'] / s:.0f}%",
                    "",
                    str(r["threads"]),
                )
            continue
        ours = rows[0]["samples_per_s"]
        for r in rows:
            rate = r.get("samples_per_s")
            acc = r.get("test_accuracy")
            t.add_row(
                claim,
                r["system"],
                f"{rate:,.0f} samples/s" if rate else r.get("note", "-"),
                "-" if r is rows[0] else _ratio(ours, rate),
                f"{100 * rate / result['ceiling_samples_per_s']:.0f}%" if rate else "-",
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
            console.print(
                f"{claim} ceiling: {result['ceiling_samples_per_s']:,.0f} samples/s "
                f"({result['ceiling_gflops']:.1f} GFLOP/s measured on the model's matrix shapes)"
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
