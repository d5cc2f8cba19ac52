"""One self-contained HTML page: findings, selections, tables, figures, the study file, provenance."""
from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from . import schemas

LIMITS = """With n seeds per variant (typically 5) the study can support: means with their t intervals,
and differences whose Holm-adjusted Welch test rejects, reported with their interval; only large
effects (a standardised difference of about 2) are reliably detected. It cannot support:
"no difference" (that needs a pre-set margin and an equivalence test), "less variance across
seeds" (the 95% interval of a standard deviation from 5 values spans about 0.6 s to 2.9 s),
failure rates (0 of 5 diverged is compatible with a 52% failure rate), or rankings among many
close variants. A non-significant row below is "not shown", never "equal"."""

METRIC_WORDS = {"accuracy": "test accuracy", "loss": "test loss", "gap_accuracy": "accuracy gap (train − val)",
                "gap_loss": "loss gap (val − train)"}


def finding(r: pd.Series) -> str:
    """One comparison in plain words."""
    pct = r["metric"] in ("accuracy", "gap_accuracy")
    scale, unit = (100, " points") if pct else (1, "")
    lvl = int(round(100 * r["ci_level"]))
    head = f"{r['family']}: {r['variant_a']} vs {r['variant_b']}: "
    if not math.isfinite(r["diff"]):
        return head + f"not enough finite runs (n = {r['n_a']} vs {r['n_b']})"
    text = (f"{r['diff'] * scale:+.2f}{unit} {METRIC_WORDS[r['metric']]}, {lvl}% CI "
            f"[{r['diff_ci_low'] * scale:.2f}, {r['diff_ci_high'] * scale:.2f}], ")
    if r["degenerate"]:
        text += "no test (both groups constant across seeds), "
    else:
        name = "paired t" if r["paired"] else "Welch"
        text += f"{name} p = {r['p_raw']:.3g}, Holm p = {r['p_adj']:.3g} (m = {r['m']}), g = {r['hedges_g']:.2f}, "
    text += f"P(improvement) = {r['prob_improvement']:.2f}, "
    text += f"n = {r['n_pairs']} pairs" if r["paired"] else f"n = {r['n_a']} vs {r['n_b']}"
    verdict = "supported" if r["reject"] else "not shown at this n"
    return head + text + f" — difference {verdict}."


def _table(df: pd.DataFrame, floatfmt="{:.4g}") -> str:
    return df.to_html(index=False, border=0, classes="t", na_rep="–",
                      float_format=lambda v: floatfmt.format(v))


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    name = html.escape(Path(path).name)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def provenance(manifests: list[dict]) -> pd.DataFrame:
    rows = []
    for key, label in (("git", "git commit"), ("versions", "versions"), ("device", "device"),
                       ("device_name", "device name"), ("status", "status")):
        values = {}
        for m in manifests:
            v = m.get(key)
            v = json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v)
            values[v] = values.get(v, 0) + 1
        rows.append({"what": label, "values (runs)": "; ".join(f"{v} ({n})" for v, n in values.items())})
    rows.append({"what": "SLURM jobs", "values (runs)": str(sum(1 for m in manifests if m.get("slurm_job_id")))})
    rows.append({"what": "resumed runs", "values (runs)": str(sum(1 for m in manifests if m.get("resumed_from")))})
    return pd.DataFrame(rows)


def analyses_html(config: dict, folders: list[Path]) -> str:
    """Per experiment, each of its analyses: the figure (one panel per variant) and the
    analysis's report tables."""
    from . import analyses

    parts = []
    for exp, c in config["experiments"].items():
        for name in c.get("analyses", {}):
            folder = next(Path(f) for f in folders if Path(f).name == name)
            tables = {t: df[df["experiment"] == exp] for t, df in analyses.read_summary(name, folder).items()}
            parts.append(f"<h3>{html.escape(exp)}: {html.escape(name)}</h3>" + _img(folder / f"{exp}.png"))
            for title, df in analyses.entry(name).extra["report"](tables).items():
                parts.append(f"<h4>{html.escape(title)}</h4>" + _table(df))
    return "".join(parts)


def write(config: dict, summary_paths: dict, figures: list[Path], manifests: list[Path], out: Path,
          analysis_folders: list[Path] = ()) -> None:
    summary = {name: schemas.read(Path(p), schemas.SUMMARY_TABLES[name]) for name, p in summary_paths.items()}
    runs = [json.loads(Path(p).read_text()) for p in manifests]
    comp = summary["comparisons"]
    final = summary["final"]
    fin = final[((final["metric"] == "accuracy") & (final["split"] == "test")) |
                ((final["metric"] == "gap_accuracy") & (final["split"] == "train-val"))]
    fin = fin[["experiment", "variant", "metric", "epoch_rule", "n_seeds", "n_nan", "n_diverged", "mean", "std",
               "ci_low", "ci_high", "median", "iqm"]]
    sel = summary["selections"]
    parts = [
        f"<h1>nnstudy report: {html.escape(config['study'])}</h1>",
        f"<p>{len(runs)} trained runs; {len(final[['experiment', 'variant']].drop_duplicates())} variants; "
        f"seeds: {html.escape(str(config['seeds']))}; final metrics from the <b>{config['final']}</b> epoch; "
        f"intervals: {int(round(100 * config['ci_level']))}% Student-t; written "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}.</p>",
        "<h2>Findings</h2><ul>" + "".join(f"<li>{html.escape(finding(r))}</li>" for _, r in comp.iterrows()) + "</ul>",
        f"<p class='limits'><b>What these seeds cannot support.</b> {html.escape(LIMITS)}</p>",
        "<h2>Selections (made on validation data)</h2>",
        _table(sel) if len(sel) else "<p>none</p>",
        "<h2>Final metrics</h2>", _table(fin),
        "<h2>Figures</h2>", "".join(_img(p) for p in figures),
        *(["<h2>Per-run analyses, averaged over seeds</h2>", analyses_html(config, analysis_folders)]
          if analysis_folders else []),
        "<h2>Comparisons</h2>",
        _table(comp[["family", "variant_a", "variant_b", "metric", "paired", "n_a", "n_b", "mean_a", "mean_b", "diff",
                     "diff_ci_low", "diff_ci_high", "test", "statistic", "df", "p_raw", "p_perm", "p_adj", "m", "reject",
                     "hedges_g", "prob_improvement", "degenerate", "selected_on"]]),
        "<h2>Study file (defaults filled)</h2>",
        f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>",
        "<h2>Provenance</h2>", _table(provenance(runs)),
    ]
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table.t{border-collapse:collapse;font-size:12px}table.t td,table.t th{padding:2px 6px;"
             "border-bottom:1px solid #ddd}figure{display:inline-block;margin:4px}img{max-width:100%}"
             ".limits{background:#fff6e0;padding:.6em}pre{background:#f6f6f6;padding:.6em;font-size:12px}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>nnstudy: {html.escape(config['study'])}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    schemas.write_text(page, out)
