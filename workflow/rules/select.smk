# Choices that depend on results (best LR, best dropout rate), made on validation data. Runs
# that use a choice are templates, planned up front, that read this file when they start.
checkpoint select:
    input:
        selection_inputs,
    output:
        f"{R}/selections/{{name}}.json",
    log:
        f"logs/{STUDY.name}/select/{{name}}.log",
    priority: STUDY.selection_priority()
    conda:
        "../../environment.yml"
    params:
        job=step_job(),
    shell:
        "python -m nnstudy step select --job {params.job:q} --log {log:q}"
