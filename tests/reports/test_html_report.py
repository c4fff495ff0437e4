"""The HTML report opens in headless Chromium with every plot decoded, and its table matches results.json."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cadence.comparison import build_compare_config, compare
from cadence.config import build_config
from cadence.reports import recommend, write_report

# Writes each image's decoded size into the DOM once the page (images included) has loaded.
PROBE = (
    "<script>window.addEventListener('load', function () {"
    "document.body.setAttribute('data-widths', Array.from(document.images)"
    ".map(function (i) { return i.naturalWidth + 'x' + i.naturalHeight; }).join(','));});</script>"
)


def chromium_dom(page: Path, tmp_path: Path) -> str:
    """The page's DOM after load, from headless Chromium with networking off (Debian's chromium)."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run `make system-deps` (Debian package chromium)"
    profile = tmp_path / "chromium-profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom"]
    proc = subprocess.run([chromium, *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class SummaryTable(HTMLParser):
    """Collects {data-group: {data-col: text}} from the table with id="summary", and body attributes."""

    def __init__(self):
        super().__init__()
        self.rows: dict[int, dict[str, str]] = {}
        self.body: dict[str, str] = {}
        self._in_summary = False
        self._row: int | None = None
        self._col: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._in_summary = a.get("id") == "summary"
        elif self._in_summary and tag == "tr" and "data-group" in a:
            self._row = int(a["data-group"])
            self.rows[self._row] = {}
        elif self._row is not None and tag == "td":
            self._col = a.get("data-col")
            self.rows[self._row][self._col] = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_summary = False
            self._row = None
        elif tag == "td":
            self._col = None

    def handle_data(self, data):
        if self._row is not None and self._col is not None:
            self.rows[self._row][self._col] += data


def numbers(cell: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"[\d,]*\.?\d+", cell)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from cadence.config import DataConfig
    from cadence.data.datasets import load_data

    out = tmp_path_factory.mktemp("report")
    data = load_data(DataConfig(limit=400), seed=0)
    settings = build_compare_config(
        {
            "strategies": ["mini-batch:32", "online"],
            "optimizers": ["sgd", "adam"],
            "seeds": 2,
            "budget": {"samples": 600},
            "workers": 1,
        }
    )
    result = compare(build_config({"model": {"spec": "mlp:16"}}), settings, data=data)
    result.save(out / "results.json")
    tree = json.loads((out / "results.json").read_text())
    return write_report(tree, out), tree


def test_report_opens_in_chromium_with_every_plot_decoded(report, tmp_path):
    page, _ = report
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    parsed = SummaryTable()
    parsed.feed(chromium_dom(probe, tmp_path))
    sizes = [tuple(map(int, s.split("x"))) for s in parsed.body["data-widths"].split(",")]
    assert len(sizes) == len(list((page.parent / "plots").glob("*.png"))) == 4
    assert all(w > 0 and h > 0 for w, h in sizes), sizes


def test_report_table_in_chromium_matches_the_raw_runs_of_results_json(report, tmp_path):
    page, tree = report
    parsed = SummaryTable()
    parsed.feed(chromium_dom(page, tmp_path))
    assert sorted(parsed.rows) == [g["group"] for g in tree["groups"]] == [0, 1, 2, 3]
    for group in tree["groups"]:
        row = parsed.rows[group["group"]]
        runs = [r for r in tree["runs"] if r["group"] == group["group"]]
        assert row["label"] == group["label"] == runs[0]["label"]
        for key, tol in (("test_accuracy", 5e-4), ("test_loss", 5e-4), ("seconds", 5e-3)):
            values = [r[key] for r in runs]
            mean, std = numbers(row[key])
            assert mean == pytest.approx(statistics.fmean(values), abs=tol), (group["label"], key)
            assert std == pytest.approx(statistics.stdev(values), abs=tol), (group["label"], key)
        assert numbers(row["samples_seen"])[0] == statistics.fmean(r["samples_seen"] for r in runs)
        assert numbers(row["updates"])[0] == statistics.fmean(r["updates"] for r in runs)
        assert row["stop_reasons"] == "budget ×2"


def test_report_is_self_contained_and_says_what_to_use(report):
    page, tree = report
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from a network
    assert html.count('src="data:image/png;base64,') == 4
    assert recommend(tree).headline in html
    assert "compare:\n  strategies:" in html  # the exact, rerunnable configuration
    assert f'<td>torch</td><td class="text">{tree["environment"]["libraries"]["torch"]}</td>' in html
