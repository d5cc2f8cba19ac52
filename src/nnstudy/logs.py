"""Logs of the workflow's steps: a step's stderr and, if it fails, its traceback go to its log."""
from __future__ import annotations

import contextlib
import traceback
from pathlib import Path


@contextlib.contextmanager
def logged(path: str | Path, outputs=()):
    """Run the block with stderr appended to `path`; a failure's traceback is written there
    too (and re-raised, so the step fails and Snakemake names the log). Temporary files that a
    killed earlier attempt left beside the step's `outputs` are removed first."""
    from .schemas import remove_stale

    remove_stale(outputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log, contextlib.redirect_stderr(log):
        try:
            yield
        except BaseException:
            traceback.print_exc(file=log)
            raise
