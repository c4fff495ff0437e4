"""Screenshot a comparison report in headless Chromium at 1,400 and 800 px, each as tall as its page.

    python scripts/report_screenshots.py runs/compare-.../report.html OUT_DIR   # -> OUT_DIR/report-1400.png ...

The page is laid out next to a scrollbar, as tests/reports/test_html_report.py checks it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = (
    "<script>window.addEventListener('load', function () {"
    "document.documentElement.style.overflowY = 'scroll';"
    "var p = document.createElement('pre'); p.id = 'height'; p.style.display = 'none';"
    "p.textContent = document.documentElement.scrollHeight; document.body.appendChild(p);});</script>"
)


def screenshot(page: Path, out: Path, width: int, work: Path) -> Path:
    probed = work / "page.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    chromium = shutil.which("chromium") or sys.exit("chromium is not installed: make system-deps")
    base = [chromium, *FLAGS, f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([*base, f"--window-size={width},1000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    height = int(re.search(r'<pre id="height"[^>]*>(\d+)</pre>', dom).group(1))
    subprocess.run([*base, f"--window-size={width},{height}", f"--screenshot={out}", probed.as_uri()],
                   capture_output=True, check=True)  # fmt: skip
    return out


def main() -> None:
    page, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for width in (1400, 800):
            print(screenshot(page, out_dir / f"report-{width}.png", width, Path(work)))


if __name__ == "__main__":
    main()
