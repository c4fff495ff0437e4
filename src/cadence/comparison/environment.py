"""What a comparison ran on: library versions and machine facts, recorded in results.json and the report."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

LIBRARIES = ("cadence", "torch", "numpy", "scikit-learn", "pydantic", "matplotlib", "rich", "typer", "safetensors")


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Python, OS, CPU model, core counts, memory and the versions of the libraries a run depends on."""
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gb": _memory_gb(),
        "torch_build": torch.__version__,
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
