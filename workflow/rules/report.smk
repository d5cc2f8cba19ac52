# The figures in two steps that can draw side by side: gradient flow, and everything else.
localrules:
    figures,
    gradient_figures,
    report,


rule figures:
    input:
        curves=SUMMARY["curves"],
        final=SUMMARY["final"],
    output:
        [
            report(f, caption="../report/figure.rst", category="Figures")
            for f in OUTCOME_FIGURES
        ],
    log:
        f"logs/{STUDY.name}/figures.log",
    # Before gradient_figures when one core is free: the report waits for both, and this is
    # the longer (the demo's 15 figures ~2.7 s of CPU, its 5 gradient figures ~2.4 s).
    priority: 3
    conda:
        "../../environment.yml"
    params:
        job=step_job("curves", "final"),
    shell:
        "python -m nnstudy step figures --job {params.job:q} --log {log:q}"


rule gradient_figures:
    input:
        flow=SUMMARY["gradient_flow"],
    output:
        [
            report(f, caption="../report/figure.rst", category="Figures")
            for f in GRADIENT_FIGURES
        ],
    log:
        f"logs/{STUDY.name}/gradient_figures.log",
    priority: 2
    conda:
        "../../environment.yml"
    params:
        job=step_job("flow"),
    shell:
        "python -m nnstudy step gradient_figures --job {params.job:q} --log {log:q}"


rule report:
    input:
        summary=list(SUMMARY.values()),
        figures=FIGURES,
        analyses=ANALYSIS_SUMMARIES,
        jobs=JOBS,
    output:
        report(f"{R}/report.html", caption="../report/report.rst", category="Report"),
    log:
        f"logs/{STUDY.name}/report.log",
    conda:
        "../../environment.yml"
    params:
        job=step_job("summary", "figures", "analyses"),
    shell:
        "python -m nnstudy step report --job {params.job:q} --log {log:q}"
