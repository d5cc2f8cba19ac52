# nnstudy: a study file (config.yaml, or another given with --configfile) -> seeded training
# runs -> summaries with honest statistics -> figures -> one HTML report. See README.md.
include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/summarise.smk"
include: "workflow/rules/analyse.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{R}/report.html",
        # Every run, summary and figure is a target too: Snakemake does not rebuild a deleted
        # intermediate file whose consumers are up to date, and a deleted one must come back.
        JOBS,
        SUMMARY.values(),
        FIGURES,
        ANALYSIS_SUMMARIES,
        TENSORBOARD,
