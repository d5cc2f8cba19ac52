localrules:
    collect,
    summarise,
    tensorboard,


rule collect:
    input:
        jobs=JOBS,
        selections=SELECTIONS,
    output:
        runs=directory(f"{R}/runs"),
        gradients=directory(f"{R}/gradients"),
    log:
        f"logs/{STUDY.name}/collect.log",
    priority: 2
    conda:
        "../../environment.yml"
    params:
        job=step_job("selections"),
    shell:
        "python -m nnstudy step collect --job {params.job:q} --log {log:q}"


rule summarise:
    input:
        runs=rules.collect.output.runs,
        gradients=rules.collect.output.gradients,
        selections=SELECTIONS,
    output:
        **SUMMARY,
    log:
        f"logs/{STUDY.name}/summarise.log",
    priority: 2
    conda:
        "../../environment.yml"
    params:
        job=step_job("selections", "runs", "gradients"),
    shell:
        "python -m nnstudy step summarise --job {params.job:q} --log {log:q}"


rule tensorboard:
    input:
        runs=rules.collect.output.runs,
        curves=SUMMARY["curves"],
    output:
        directory(f"{R}/tensorboard"),
    log:
        f"logs/{STUDY.name}/tensorboard.log",
    conda:
        "../../environment.yml"
    params:
        job=step_job("runs", "curves"),
    shell:
        "python -m nnstudy step tensorboard --job {params.job:q} --log {log:q}"
