localrules:
    collect,
    summarise,


rule collect:
    input:
        jobs=JOBS,
        selections=SELECTIONS,
    output:
        runs=directory(f"{R}/runs"),
        gradients=directory(f"{R}/gradients"),
    log:
        f"logs/{STUDY.name}/collect.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/collect.py"


rule summarise:
    input:
        runs=rules.collect.output.runs,
        gradients=rules.collect.output.gradients,
        selections=SELECTIONS,
    output:
        **SUMMARY,
    log:
        f"logs/{STUDY.name}/summarise.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/summarise.py"
