"""Reports: rich tables (table.py), PNG plots (plots.py), the self-contained HTML page (html.py) and the
recommendation in words (recommend.py). They read a comparison as results.json holds it."""

from __future__ import annotations

from pathlib import Path

from cadence.reports.recommend import Recommendation, recommend


def write_report(result: dict, out_dir: str | Path, advice: Recommendation | None = None) -> Path:
    """Write plots/*.png and report.html for a comparison into `out_dir`; return the report's path."""
    # Imported here: matplotlib and the comparison code would otherwise load with every table `train` prints.
    from cadence.reports.html import write_html
    from cadence.reports.plots import write_plots

    out_dir = Path(out_dir)
    plots = write_plots(result, out_dir / "plots")
    return write_html(result, plots, out_dir / "report.html", advice)


__all__ = ["Recommendation", "recommend", "write_report"]
