"""The HTML report in headless Chromium at 1,400 and 800 px: the results table fits the page with every
column shown and no number broken, the recommended row is marked, the plots are legible; and the
screenshot shows what the DOM says is there. The table's numbers match results.json."""

from __future__ import annotations

import html
import json
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadence.comparison import build_compare_config, compare
from cadence.config import build_config
from cadence.reports import recommend, write_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]

# After load: lay the page out with a vertical scrollbar (as a window this wide would show), then write every
# box the checks need into a hidden <pre id="probe">, boxes as [left, top, width, height] in page pixels.
PROBE = """<script>window.addEventListener('load', function () {
  document.documentElement.style.overflowY = 'scroll';
  function box(e) {
    var r = e.getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, r.width, r.height];
  }
  function shown(e) { return e.getClientRects().length > 0; }
  var out = {width: document.documentElement.clientWidth, scrollWidth: document.documentElement.scrollWidth,
             height: document.documentElement.scrollHeight, tables: {}, images: []};
  document.querySelectorAll('#results table').forEach(function (t) {
    out.tables[t.id] = {shown: shown(t), box: box(t), cells: Array.from(t.querySelectorAll('th, td')).filter(shown)
      .map(function (c) { return {col: c.dataset.col, group: c.parentElement.dataset.group || null,
        head: c.tagName === 'TH', box: box(c), scroll: c.scrollWidth, client: c.clientWidth,
        recommended: c.parentElement.classList.contains('recommended'), bg: getComputedStyle(c).backgroundColor,
        parts: Array.from(c.querySelectorAll('.v, .sd')).map(function (v) { return v.getClientRects().length; })};
      })};
  });
  Array.from(document.images).forEach(function (i) {
    out.images.push({plot: i.dataset.plot, natural: [i.naturalWidth, i.naturalHeight], box: box(i),
                     border: i.clientLeft});
  });
  var p = document.createElement('pre'); p.id = 'probe'; p.style.display = 'none';
  p.textContent = JSON.stringify(out); document.body.appendChild(p);
});</script>"""
TICK_PT, DPI = 11, 100  # plots.py: tick labels are 11 pt at 100 dpi, 15.3 px at natural size


def chromium(
    page: Path, tmp_path: Path, width: int = 1400, height: int = 1000, screenshot: Path | None = None
) -> str:
    """The page's DOM after load (and a screenshot) from headless Chromium with networking off."""
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: run `make system-deps` (Debian package chromium)"
    flags = [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={width},{height}"]
    flags += ["--virtual-time-budget=10000", "--dump-dom"]
    flags += [f"--screenshot={screenshot}"] if screenshot else []
    proc = subprocess.run([binary, *flags, page.as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def probe(page: Path, tmp_path: Path, width: int) -> tuple[dict, np.ndarray]:
    """(the probe's boxes, the screenshot as an RGB array) of `page` in a window `width` px wide and as tall
    as the page, so the screenshot holds the whole page laid out exactly as the boxes say."""
    probed = tmp_path / f"probe-{width}.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    height = 6500  # most reports are shorter: one Chromium run
    for _ in range(3):
        shot = tmp_path / f"shot-{width}.png"
        dom = chromium(probed, tmp_path, width, height, screenshot=shot)
        boxes = json.loads(html.unescape(re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', dom, re.S).group(1)))
        if boxes["height"] <= height:
            with Image.open(shot) as img:
                return boxes, np.asarray(img.convert("RGB"))
        height = boxes["height"] + 100
    raise AssertionError(f"the page kept growing: {boxes['height']} px")


def region(shot: np.ndarray, box, inset: int = 0) -> np.ndarray:
    left, top, w, h = (round(v) for v in box)
    return shot[top + inset : top + h - inset, left + inset : left + w - inset]


class SummaryTable(HTMLParser):
    """Collects {data-group: {data-col: text}} from the table with id="summary"."""

    def __init__(self):
        super().__init__()
        self.rows: dict[int, dict[str, str]] = {}
        self._in_summary = False
        self._row: int | None = None
        self._col: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
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
    """Nine configurations x two seeds on 400 digits, with early stopping, so some rows stop both ways."""
    from cadence.config import DataConfig
    from cadence.data.datasets import load_data

    out = tmp_path_factory.mktemp("report")
    data = load_data(DataConfig(limit=400), seed=0)
    settings = build_compare_config(
        {
            "strategies": ["full-batch", "mini-batch:32", "online"],
            "optimizers": ["sgd", "momentum", "adam"],
            "seeds": 2,
            "budget": {"samples": 1200},
            "workers": 1,
        }
    )
    config = {"model": {"spec": "mlp:16"}, "eval": {"every_updates": 3}}
    config["stop"] = {"early_stopping_metric": "val_loss", "early_stopping_patience": 1}
    result = compare(build_config(config), settings, data=data)
    result.save(out / "results.json")
    tree = json.loads((out / "results.json").read_text())
    return write_report(tree, out), tree


@pytest.fixture(scope="module", params=[1400, 800])
def rendered(request, report, tmp_path_factory):
    page, tree = report
    boxes, shot = probe(page, tmp_path_factory.mktemp(f"chromium-{request.param}"), request.param)
    return request.param, boxes, shot, tree


def test_the_results_table_fits_the_page_with_every_column_shown_and_no_number_broken(rendered):
    width, boxes, _, tree = rendered
    assert boxes["width"] == width - 15  # laid out next to a scrollbar, as a real window would be
    assert boxes["scrollWidth"] <= boxes["width"]  # the page never scrolls sideways
    tables = [t for t in boxes["tables"].values() if t["shown"]]
    assert len(tables) == (1 if width == 1400 else 2)  # under 1,200 px the table is split in two
    shown: dict[str, list] = {}
    for table in tables:
        left, _, w, _ = table["box"]
        assert left >= 0 and left + w <= boxes["width"]
        for cell in table["cells"]:
            assert cell["box"][0] + cell["box"][2] <= left + w + 0.5
            assert cell["scroll"] <= cell["client"], cell  # nothing spills out of its cell
            assert all(n == 1 for n in cell["parts"]), cell  # each mean, ± std and list item on one line
            if not cell["head"] and cell["col"] != "label":
                shown.setdefault(cell["col"], []).append(int(cell["group"]))
    groups = [g["group"] for g in tree["groups"]]
    assert len(shown) == 11  # lr, 8 statistics (test accuracy ... samples to goal), at goal, stop reasons
    assert all(sorted(rows) == groups for rows in shown.values())  # each cell exactly once


def test_the_recommended_row_is_tinted_in_the_screenshot_where_the_dom_puts_it(rendered):
    _, boxes, shot, tree = rendered
    choice = next(g["group"] for g in tree["groups"] if g["label"] == recommend(tree).choice)
    for table in (t for t in boxes["tables"].values() if t["shown"]):
        cells = [c for c in table["cells"] if not c["head"] and c["col"] in ("lr", "updates", "at_goal")]
        assert cells
        for cell in cells:
            assert cell["recommended"] == (int(cell["group"]) == choice)
            median = np.median(region(shot, cell["box"], inset=2).reshape(-1, 3), axis=0)
            expected = [float(v) for v in re.findall(r"\d+", cell["bg"])[:3]] if cell["recommended"] else [255] * 3
            assert np.abs(median - expected).max() <= 3, (cell, median)
        assert any(c["recommended"] for c in cells)


def test_plots_are_drawn_where_the_dom_says_and_tick_labels_stay_legible(rendered, report):
    width, boxes, shot, _ = rendered
    page, _ = report
    plots = {p.stem: p for p in (page.parent / "plots").glob("*.png")}
    assert sorted(i["plot"] for i in boxes["images"]) == sorted(plots)
    for image in boxes["images"]:
        left, top, w, h = image["box"]
        assert left + w <= boxes["width"]
        scale = (w - 2 * image["border"]) / image["natural"][0]
        assert scale <= 1.0 and TICK_PT * DPI / 72 * scale >= 11, (image["plot"], scale)  # ≥ 11 px tick labels
        shown = region(shot, image["box"], inset=image["border"]).astype(float)
        with Image.open(plots[image["plot"]]) as png:
            drawn = np.asarray(png.convert("RGB").resize(shown.shape[1::-1], Image.LANCZOS), dtype=float)
        assert np.abs(shown - drawn).mean() < 6, image["plot"]  # the screenshot shows this PNG in this box
        assert shown.std() > 20  # and it is not a blank box


def test_report_table_in_chromium_matches_the_raw_runs_of_results_json(report, tmp_path):
    page, tree = report
    parsed = SummaryTable()
    parsed.feed(chromium(page, tmp_path))
    assert sorted(parsed.rows) == [g["group"] for g in tree["groups"]] == list(range(9))
    for group in tree["groups"]:
        row = parsed.rows[group["group"]]
        runs = [r for r in tree["runs"] if r["group"] == group["group"]]
        assert row["label"] == group["label"] == runs[0]["label"]
        for key, tol in (("test_accuracy", 5e-4), ("test_loss", 5e-4), ("seconds", 5e-3)):
            values = [r[key] for r in runs]
            mean, std = numbers(row[key])
            assert mean == pytest.approx(statistics.fmean(values), abs=tol), (group["label"], key)
            assert std == pytest.approx(statistics.stdev(values), abs=tol), (group["label"], key)
        samples = [r["samples_seen"] for r in runs]
        assert numbers(row["samples_seen"])[0] == pytest.approx(statistics.fmean(samples), abs=0.5)
        reasons = [r["stop_reason"] for r in runs]
        expected = [f"{reason} ×{reasons.count(reason)}" for reason in dict.fromkeys(reasons)]
        assert row["stop_reasons"].split(", ") == expected
        reached = sum(r["goal_seconds"] is not None for r in runs)
        assert row["at_goal"] == f"{reached}/{len(runs)}"


def test_report_is_self_contained_and_says_what_to_use(report):
    page, tree = report
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched from a network
    assert "<script" not in text
    assert text.count('src="data:image/png;base64,') == 3  # no lr plot: every schedule is constant
    assert recommend(tree).headline in text
    assert "compare:\n  strategies:" in text  # the exact, rerunnable configuration
    assert f'<td>torch</td><td class="text">{tree["environment"]["libraries"]["torch"]}</td>' in text
    every_run = text[text.index('<table id="runs"') :]
    for run in tree["runs"]:  # each run says which engine trained it, as `cadence train` does
        assert f"{run['engine']} ({run['device']}, {run['threads']} thread" in every_run, run["label"]
