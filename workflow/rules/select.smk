# Choices that depend on results (best LR, best dropout rate), made on validation data. Runs
# that use a choice are templates, planned up front, that read this file when they start.
checkpoint select:
    input:
        lambda w: STUDY.selection_inputs(w.name),
    output:
        f"{R}/selections/{{name}}.json",
    conda:
        "../../environment.yml"
    log:
        f"logs/{STUDY.name}/select/{{name}}.log",
    script:
        "../scripts/select.py"
