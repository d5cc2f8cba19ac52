# Per-run analyses (an experiment's `analyses:` in the study file): one job per analysis and
# experiment computes it for every run the experiment reads (load_run, `analysis_weights`); one
# job per analysis averages it over seeds per variant (its declared tables) and draws one figure
# per experiment, into results/<study>/analyses/<analysis>/summary/.
rule analyse:
    input:
        analysis_inputs,
    output:
        f"{R}/analyses/{{analysis}}/{{experiment}}.parquet",
    log:
        f"logs/{STUDY.name}/analyse/{{analysis}}-{{experiment}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
    params:
        runs=lambda w: [STUDY.run_dir(k) for k in STUDY.analysis_keys(w.experiment)],
        params=lambda w: json.dumps(
            config["experiments"][w.experiment]["analyses"][w.analysis] or {}
        ),
    message:
        "analyse {wildcards.analysis}: {wildcards.experiment}"
    shell:
        "python -m nnstudy analyse {wildcards.analysis:q} --params-json {params.params:q}"
        " --weights {config[analysis_weights]:q} --out {output:q} --runs {params.runs:q} >> {log:q} 2>&1"


rule analysis_summary:
    input:
        files=lambda w: ANALYSES[w.analysis],
        selections=SELECTIONS,
    output:
        directory(f"{R}/analyses/{{analysis}}/summary"),
    log:
        f"logs/{STUDY.name}/analysis_summary/{{analysis}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/analysis_summary.py"
