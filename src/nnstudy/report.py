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
from markupsafe import Markup

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


def _pct(m, lo, hi, scale: float = 100) -> str:
    """"mean [low, high]" for people: percentages (or points) to 2 decimals."""
    if pd.isna(m):
        return "–"
    bounds = f" [{scale * lo:.2f}, {scale * hi:.2f}]" if pd.notna(lo) and pd.notna(hi) else ""
    return f"{scale * m:.2f}{bounds}"


def experiment_table(final: pd.DataFrame, cost: pd.DataFrame | None) -> pd.DataFrame:
    """One row per variant: n, test accuracy (%), the train − val gap (points), and the run time
    where the cost analysis measured it; each with its interval."""
    acc = final[(final["metric"] == "accuracy") & (final["split"] == "test")].set_index("variant")
    gap = final[(final["metric"] == "gap_accuracy") & (final["split"] == "train-val")].set_index("variant")
    rows = []
    for variant, r in acc.iterrows():
        row = {"variant": variant, "n": int(r["n_seeds"]), "test accuracy, % [CI]": _pct(r["mean"], r["ci_low"], r["ci_high"])}
        g = gap.loc[variant] if variant in gap.index else None
        row["gap train − val, points [CI]"] = _pct(g["mean"], g["ci_low"], g["ci_high"]) if g is not None else "–"
        if cost is not None:
            t = cost[(cost["variant"] == variant) & (cost["what"] == "run time")]
            row["training time, s [CI]"] = _pct(t["mean"].iloc[0], t["ci_low"].iloc[0], t["ci_high"].iloc[0], 1) if len(t) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_table(comp: pd.DataFrame) -> pd.DataFrame:
    """The comparisons for people: differences in points for accuracies, p-values to 3
    significant digits."""
    rows = []
    for _, r in comp.iterrows():
        scale = 100 if r["metric"] in ("accuracy", "gap_accuracy") else 1
        n = f"{r['n_pairs']} pairs" if r["paired"] else f"{r['n_a']} vs {r['n_b']}"
        rows.append({"family": r["family"], "A": r["variant_a"], "B": r["variant_b"], "metric": METRIC_WORDS[r["metric"]],
                     "n": n, "A − B [CI]": _pct(r["diff"], r["diff_ci_low"], r["diff_ci_high"], scale),
                     "test": r["test"], "p": f"{r['p_raw']:.3g}", "Holm p": f"{r['p_adj']:.3g}", "m": r["m"],
                     "difference": "supported" if r["reject"] else "not shown", "g": f"{r['hedges_g']:.2f}",
                     "P(improvement)": f"{r['prob_improvement']:.2f}", "chosen on": r["selected_on"]})
    return pd.DataFrame(rows)


def _analyses(exp: str, names, folders: list[Path]) -> list[dict]:
    """Each analysis of the experiment: its figure and its report tables."""
    from . import analyses

    out = []
    for name in names:
        folder = next(Path(f) for f in folders if Path(f).name == exp) / name
        tables = analyses.read_summary(name, folder)
        report = analyses.entry(name).extra["report"](tables)
        out.append({"name": name, "figure": Markup(_img(folder / f"{exp}.png")),
                    "tables": [(title, Markup(_table(df))) for title, df in report.items()]})
    return out


def write(config: dict, summary_paths: dict, figures: list[Path], manifests: list[Path], out: Path,
          analysis_folders: list[Path] = ()) -> None:
    """The study's page from templates/report.html.j2: per experiment its question, table,
    findings, figures and analyses (`analysis_folders`: summary/analyses/<experiment>/ of each
    experiment with some); then the study-wide figures, selections, comparisons, the study file
    and provenance."""
    import jinja2

    from . import analyses

    summary = {name: schemas.read(Path(p), schemas.SUMMARY_TABLES[name]) for name, p in summary_paths.items()}
    runs = [json.loads(Path(p).read_text()) for p in manifests]
    final, comp = summary["final"], summary["comparisons"]
    by_name = {Path(f).name: Path(f) for f in figures}
    costs = [analyses.read_summary("cost", Path(f) / "cost")["cost"] for f in analysis_folders
             if "cost" in config["experiments"][Path(f).name].get("analyses", {})]
    cost = pd.concat(costs, ignore_index=True) if costs else None
    experiments = []
    for exp, c in config["experiments"].items():
        mine = [by_name[n] for n in (f"curves_{exp}.png", f"final_{exp}.png", f"gradient_flow_{exp}.png") if n in by_name]
        findings = [finding(r) for _, r in comp.iterrows() if r["variant_a"].split("/", 1)[0] == exp]
        has_cost = cost is not None and exp in set(cost["experiment"])
        experiments.append({
            "name": exp, "description": c.get("description", ""), "target": c.get("target"), "findings": findings,
            "table": Markup(_table(experiment_table(final[final["experiment"] == exp],
                                                    cost[cost["experiment"] == exp] if has_cost else None))),
            "figures": [Markup(_img(p)) for p in mine],
            "analyses": _analyses(exp, c.get("analyses", {}), analysis_folders),
        })
    own = {f"{kind}_{e}.png" for kind in ("curves", "final", "gradient_flow") for e in config["experiments"]}
    shared = [path for name, path in by_name.items() if name not in own]
    env = jinja2.Environment(loader=jinja2.PackageLoader("nnstudy", "templates"), autoescape=True)
    page = env.get_template("report.html.j2").render(
        study=config["study"], limits=LIMITS, experiments=experiments,
        overview=(f"{len(runs)} trained runs; {len(final[['experiment', 'variant']].drop_duplicates())} variants; seeds: "
                  f"{config['seeds']}; final metrics from the {config['final']} epoch; intervals: "
                  f"{int(round(100 * config['ci_level']))}% Student-t; written "
                  f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}."),
        study_figures=[Markup(_img(p)) for p in shared],
        selections=Markup(_table(summary["selections"]) if len(summary["selections"]) else "<p>none</p>"),
        comparisons=Markup(_table(comparisons_table(comp))),
        study_file=yaml.safe_dump(config, sort_keys=False), provenance=Markup(_table(provenance(runs))))
    schemas.write_text(page + "\n", out)
