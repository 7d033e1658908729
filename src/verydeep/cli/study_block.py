"""The results block of a plan's report: where it goes, and writing it inside the report's prose
(the fine-tuning and data-parallel plans share this; the Section 4 study writes whole reports)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def report_path(given: str | None, planned: str) -> Path | None:
    """``--report``, else the plan's report; None: print the block instead. A folder is refused."""
    report = Path(given or planned) if (given or planned) else None
    if report is not None and report.exists() and not report.is_file():
        raise ValueError(f"--report {report} is not a file")
    return report


def write_block(report: Path | None, block: str, title: str, splice: Callable[[str, str], str]) -> None:
    """``block`` spliced into ``report`` (a new report starts with ``title``), or printed."""
    from ..io.files import atomic_write

    if report is None:
        print(block)
        return
    old = report.read_text() if report.is_file() else f"# {title}\n"
    atomic_write(report, splice(old, block).encode())
    print(f"wrote the results block of {report}", file=sys.stderr)
