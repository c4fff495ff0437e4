"""The wheel carries what users and type checkers need: the version from cadence/__init__.py, the SPDX
license with its file, classifiers, py.typed, and the optional extras. Built offline, from a copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import cadence

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_metadata_license_and_py_typed(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run([*build, "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("cadence-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = Parser().parsestr(z.read(f"cadence-{cadence.__version__}.dist-info/METADATA").decode())
    assert "cadence/py.typed" in names and f"cadence-{cadence.__version__}.dist-info/licenses/LICENSE" in names
    assert meta["Version"] == cadence.__version__ and meta["License-Expression"] == "MIT"
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert {"tensorboard", "mlflow", "pandas", "dev"} <= set(meta.get_all("Provides-Extra"))
