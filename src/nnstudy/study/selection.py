"""Choices made inside the workflow on validation data (best LR, best dropout rate), written
with their evidence; the values of the files a template run reads when it starts."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .. import schemas
from ..spec import SpecError
from .plan import Study, fmt


def load_selections(paths) -> dict:
    """{name: value} from selection files."""
    out = {}
    for p in paths:
        try:
            blob = json.loads(Path(p).read_text())
            out[blob["name"]] = blob["value"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SpecError(f"--selections {p}: not a selection file ({type(e).__name__}: {e})") from None
    return out


def select(study: Study, name: str, out: Path) -> dict:
    """Choose the value of a grid key by the mean final validation metric over seeds; write the
    choice with its evidence (every candidate's mean, std, n) as JSON."""
    sel = study.config["selections"][name]
    metric, rule = study.config["selection_metric"], study.config["final"]
    frames = []
    for row in study.rows_of(sel["experiment"]):
        m = schemas.read(Path(study.run_dir(row.key)) / "metrics.parquet", schemas.METRICS)
        frames.append(m.assign(value=fmt(row.values[sel["key"]]), seed=row.seed))
    df = pd.concat(frames, ignore_index=True)
    from .. import stats  # here, not at the top: training jobs read selection files without scipy

    fin = stats.final(df, rule, metric).query("split == 'val'")
    if fin.empty:
        raise SpecError(f"study.selections.{name}: experiment {sel['experiment']} has no validation split to select on")
    summary = stats.summarise(fin, ["value"], metric, study.config["ci_level"]).set_index("value")
    eligible = [fmt(v) for v in study.eligible(name)]
    candidates = []
    best, best_score = None, -math.inf
    for raw in study.key_values(sel["experiment"], sel["key"]):
        v = fmt(raw)
        row = summary.loc[v]
        score = row["mean"] if metric == "accuracy" else -row["mean"]
        ok = v in eligible and math.isfinite(score)
        if ok and score > best_score:
            best, best_score = raw, score
        candidates.append({"value": raw, "eligible": v in eligible, "mean": _num(row["mean"]),
                           "std": _num(row["std"]), "n": int(row["n_seeds"]), "n_nan": int(row["n_nan"])})
    if best is None:
        raise RuntimeError(f"selection {name}: every eligible candidate has a non-finite {metric}")
    blob = {"name": name, "experiment": sel["experiment"], "key": sel["key"], "value": best,
            "chosen_on": f"val {metric}, mean over seeds of each run's final epoch ({rule})",
            "goal": "max" if metric == "accuracy" else "min", "candidates": candidates}
    schemas.write_text(json.dumps(blob, indent=2) + "\n", out)
    return blob


def _num(x):
    return None if x is None or not math.isfinite(x) else float(x)
