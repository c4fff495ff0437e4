"""Compare strategies x optimizers x schedules x seeds on the same model, data and budget.

config.py (the `compare:` settings) -> grid.py (one job per run) -> runner.py (worker processes, live
display, Ctrl-C) -> results.py (one tidy record per run, summaries per configuration); comparison.py ties them.
"""

from cadence.comparison.comparison import compare
from cadence.comparison.config import BudgetConfig, CompareConfig, build_compare_config, load_compare_file
from cadence.comparison.grid import DEFAULT_LRS, Job, build_grid
from cadence.comparison.results import CompareResult

__all__ = [
    "DEFAULT_LRS",
    "BudgetConfig",
    "CompareConfig",
    "CompareResult",
    "Job",
    "build_compare_config",
    "build_grid",
    "compare",
    "load_compare_file",
]
