localrules:
    figures,
    report,


rule figures:
    input:
        **SUMMARY,
    output:
        [report(f, caption="../report/figure.rst", category="Figures") for f in FIGURES],
    log:
        f"logs/{STUDY.name}/figures.log",
    priority: 2
    conda:
        "../../environment.yml"
    script:
        "../scripts/figures.py"


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
    script:
        "../scripts/report.py"
