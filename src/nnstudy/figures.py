"""Which figures a study draws: their file names, from the study file's experiments alone, so that
the workflow lists them without importing matplotlib (nnstudy.plots draws them)."""
from __future__ import annotations


def transfers(experiments: dict) -> dict[str, str]:
    """Experiment -> the experiment its runs transfer from, for each that does."""
    return {e: x["transfer_from"] for e, x in experiments.items() if "transfer_from" in x}


def grid_shape(experiment: dict) -> str | None:
    """How an experiment's final test accuracy is drawn on its own: "line" for one numeric grid
    key with at least 3 values (metric against the value), "heatmap" for a product of two grid
    keys; None otherwise (its variants appear in the study's final-metric figure only)."""
    grid = experiment.get("grid", {})
    if "random" in experiment or any(isinstance(v, dict) for vs in grid.values() for v in vs):
        return None
    if len(grid) == 1:
        (values,) = grid.values()
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        return "line" if numeric and len(values) >= 3 else None
    return "heatmap" if len(grid) == 2 and experiment.get("mode", "product") == "product" else None


def figure_names(experiments: dict) -> list[str]:
    """The figure files of a study with these experiments (the study file's mapping)."""
    return outcome_figure_names(experiments) + gradient_figure_names(experiments)


def outcome_figure_names(experiments: dict) -> list[str]:
    """The figures of learning curves and final metrics (plots.draw_outcomes)."""
    names = [f"curves_{e}.png" for e in experiments] + ["final_test_accuracy.png", "final_gap.png"]
    names += [f"final_{e}.png" for e, x in experiments.items() if grid_shape(x)]
    if transfers(experiments):
        names.append("transfer_vs_joint.png")
    return names


def gradient_figure_names(experiments: dict) -> list[str]:
    """The gradient-flow figures (plots.draw_gradients): a step of their own, drawn beside the
    others (about half of the drawing time)."""
    return [f"gradient_flow_{e}.png" for e in experiments]
