# Per-run analyses (an experiment's `analyses:` in the study file): the training jobs compute them
# for the runs they train (nnstudy.analyses.keep, from the model in memory); one job per experiment
# gathers them for every run the experiment reads, with the study's `analysis_weights`, loading a
# run only for what it lacks, into results/<study>/analyses/<experiment>/<analysis>.parquet; then
# one job per experiment averages its analyses over seeds per variant (their declared tables) and
# draws their figures into results/<study>/summary/analyses/<experiment>/<analysis>/. Both run
# after training (priority 1), on a core no training job needs, so an experiment's analyses are
# done while later experiments train; after the last training job the study-wide summaries,
# collect -> summarise -> figures (priority 2 and 3), go first: they are the longer chain to the
# report.
localrules:
    analysis_summaries,


rule analyse:
    input:
        analysis_inputs,
    output:
        directory(f"{R}/analyses/{{experiment}}"),
    log:
        f"logs/{STUDY.name}/analyse/{{experiment}}.log",
    priority: 1
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
        rules.analyse.output,
        selections=lambda w: STUDY.experiment_selections(w.experiment),
    output:
        directory(STUDY.analysis_summary("{experiment}")),
    log:
        f"logs/{STUDY.name}/analysis_summaries/{{experiment}}.log",
    priority: 1
    conda:
        "../../environment.yml"
    params:
        job=step_job("selections"),
    shell:
        "python -m nnstudy step analysis_summaries --job {params.job:q} --log {log:q}"
