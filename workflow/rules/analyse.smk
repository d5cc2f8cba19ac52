# Per-run analyses (an experiment's `analyses:` in the study file): the training jobs compute them
# for the runs they train (nnstudy.analyses.keep, from the model in memory); one job per experiment
# gathers them for every run the experiment reads, with the study's `analysis_weights`, loading a
# run only for what it lacks, into results/<study>/analyses/<experiment>/<analysis>.parquet; then
# one job averages every analysis over seeds per variant (its declared tables) and draws one figure
# per experiment into results/<study>/summary/analyses/<analysis>/ (a process per analysis cost
# more start-up than work).
localrules:
    analysis_summaries,


rule analyse:
    input:
        analysis_inputs,
    output:
        directory(f"{R}/analyses/{{experiment}}"),
    log:
        f"logs/{STUDY.name}/analyse/{{experiment}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
    params:
        runs=lambda w: [STUDY.run_dir(k) for k in STUDY.analysis_keys(w.experiment)],
        analyses=lambda w: json.dumps(
            {
                n: p or {}
                for n, p in config["experiments"][w.experiment]["analyses"].items()
            }
        ),
        weights=config["analysis_weights"],
        plugins=config["plugins"],
    message:
        "analyse {wildcards.experiment}: {params.analyses}"
    shell:
        "python -m nnstudy analyse --analyses-json {params.analyses:q} --weights {params.weights:q}"
        " --plugins {params.plugins:q} --out {output:q} --runs {params.runs:q} >> {log:q} 2>&1"


rule analysis_summaries:
    input:
        experiments=ANALYSED,
        selections=SELECTIONS,
    output:
        [directory(folder) for folder in ANALYSIS_SUMMARIES],
    log:
        f"logs/{STUDY.name}/analysis_summaries.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/analysis_summaries.py"
