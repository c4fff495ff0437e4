"""Every code block of README.md runs here, in order, in one scratch directory, so the README cannot go stale.

- ```python: executed (each block on its own: it must import what it uses).
- ```bash: run with `bash -e`; every command must succeed.
- ```console: each `$ command` is run; the lines after it are its expected output (stdout and stderr),
  compared line by line after masking what depends on the machine or the clock (see `meaningful`).
- ```yaml: built into a RunConfig (and its `compare:` section, if any), so every key is checked.
- An HTML comment right before a block changes that:
    <!-- readme-test: file NAME -->    write the block to NAME for later blocks (a YAML one is still checked)
    <!-- readme-test: skip REASON -->  do not run it; the reason is required (a service, minutes of work)
  Blocks of any other language, and untagged blocks, must carry one of those.

README-wide rule: a block must run in seconds on 2 cores; the whole file in about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's python and cadence

FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->\s*$")
# Words that mark a value as a time or a rate: it varies from run to run and machine to machine.
TIMING = re.compile(r"second|wall|/s\b|_per_s|\bs to goal|\btime\b|\bs\b", re.I)
BORDER = re.compile(r"[┏┡└┗┓┩┘┛┳╇┴┻━─\s]+")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: tuple[str, str] | None  # (kind, argument)

    @property
    def name(self) -> str:
        return f"README.md:{self.line} {self.lang or 'untagged'}"


def blocks(text: str) -> list[Block]:
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marked = MARKER.match(lines[k]) if k >= 0 else None
        marker = (marked.group(1), marked.group(2)) if marked else None
        found.append(Block(start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n", marker))
        i = j + 1
    return found


def _cells(line: str) -> list[str] | None:
    """The cells of a rich table row (│ or ┃ separated), or None for other lines."""
    if "│" not in line and "┃" not in line:
        return None
    return [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]


def meaningful(output: str) -> list[str]:
    """The lines of `output` that must match, with clock- and machine-dependent numbers masked:
    progress bars and table borders are dropped, table cells are compared stripped (a wider timing
    number re-pads the whole row), cells under a timing header and numbers after a timing word are <n>."""
    out, header = [], None
    for raw in output.splitlines():
        line = raw.strip()
        if not line or BORDER.fullmatch(line) or "━" in line:  # blank, a table border, a progress bar
            continue
        cells = _cells(line)
        if cells is not None:
            if "┃" in line:
                header = cells
                out.append(" | ".join(cells))
                continue
            masked = [
                NUMBER.sub("<n>", c) if header and i < len(header) and TIMING.search(header[i]) else c
                for i, c in enumerate(cells)
            ]
            out.append(" | ".join(masked))
            continue
        out.append(_mask_inline(line))
    return out


def _mask_inline(line: str) -> str:
    """Numbers given as times or rates in running text or JSON: `0.23 s`, `"seconds": 1.2`, `0:00:01`."""
    line = re.sub(r"\b\d+:\d\d:\d\d\b", "<t>", line)
    line = re.sub(r"(\d[\d,]*(?:\.\d+)?)(\s?s\b|×)", r"<n>\2", line)
    return re.sub(
        r'("?[\w/ ]*(?:second|_per_s|samples/s)[\w/ ]*"?\s*[:=]?\s*)(-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)',
        r"\1<n>",
        line,
    )


def _console(block: Block) -> list[tuple[str, list[str]]]:
    """[(command, expected output lines)] of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"{block.name}: output before the first `$ ` command: {line!r}")
    return steps


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_block(block: Block, cwd: Path) -> None:
    kind, argument = block.marker or (None, "")
    if kind == "skip":
        assert argument, f"{block.name}: `readme-test: skip` needs a reason"
        return
    if kind == "file":
        (cwd / argument).write_text(block.text)
        if block.lang != "yaml":
            return  # a YAML file is still checked as a config below
    else:
        assert kind is None, f"{block.name}: unknown marker {kind!r} (file NAME | skip REASON)"
    if block.lang == "python":
        code = compile(block.text, block.name, "exec")
        previous = os.getcwd()
        os.chdir(cwd)
        try:
            exec(code, {"__name__": "__readme__"})
        finally:
            os.chdir(previous)
    elif block.lang == "bash":
        proc = _run(block.text, cwd)
        assert proc.returncode == 0, f"{block.name} failed:\n{proc.stdout}\n{proc.stderr}"
    elif block.lang == "console":
        for command, expected in _console(block):
            proc = _run(command, cwd)
            got = meaningful(proc.stdout + proc.stderr)
            want = meaningful("\n".join(expected))
            assert got == want, f"{block.name}: `{command}` printed\n" + "\n".join(got)
    elif block.lang == "yaml":
        from cadence.comparison import build_compare_config
        from cadence.config import build_config

        tree = yaml.safe_load(block.text) or {}
        compare = tree.pop("compare", None)
        tune = tree.pop("tune", None)
        build_config(tree, source=block.name)
        if compare is not None:
            build_compare_config(compare, source=block.name)
        if tune is not None:
            from cadence.tuning.space import build_tune_config

            build_tune_config(tune, source=block.name)
    else:
        raise AssertionError(f"{block.name}: a {block.lang or 'untagged'} block needs `readme-test: file|skip`")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    path = tmp_path_factory.mktemp("readme")
    yield path
    shutil.rmtree(path, ignore_errors=True)


BLOCKS = blocks(README.read_text())


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_readme_block_runs_as_shown(block, scratch):
    run_block(block, scratch)


def test_the_masking_keeps_results_and_hides_times():
    table = textwrap.dedent(
        """\
        ┏━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┓
        ┃ strategy ┃ test accuracy ┃ seconds ┃ samples/s ┃
        ┡━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━┩
        │ online   │        0.9639 │    0.12 │    98,413 │
        └──────────┴───────────────┴─────────┴───────────┘
        online ━━━━━━━━━━━━━━━━━━━ 3771/3771 val_accuracy 0.9111 0:00:00 0:00:00
        reached it soonest (0.23 s), 21.8× sooner; "samples_per_s": 1234.5, "updates": 120"""
    )
    assert meaningful(table) == [
        "strategy | test accuracy | seconds | samples/s",
        "online | 0.9639 | <n> | <n>",
        'reached it soonest (<n> s), <n>× sooner; "samples_per_s": <n>, "updates": 120',
    ]
    wider = table.replace("0.12 │", "10.25 │").replace("0.9639", "0.9640")
    assert meaningful(wider)[1] == "online | 0.9640 | <n> | <n>"  # a result that changed is seen


def test_every_block_is_run_or_skipped_for_a_stated_reason():
    for block in BLOCKS:
        if block.marker and block.marker[0] == "skip":
            assert block.marker[1], block.name
        else:
            assert block.lang in ("python", "bash", "console", "yaml") or block.marker, block.name
