localrules: collect, summarise


rule collect:
    input:
        manifests=MANIFESTS,
        selections=SELECTIONS,
    output:
        runs=directory(f"{R}/runs"),
        gradients=directory(f"{R}/gradients"),
    conda:
        "../../environment.yml"
    log:
        f"logs/{STUDY.name}/collect.log",
    script:
        "../scripts/collect.py"


rule summarise:
    input:
        runs=rules.collect.output.runs,
        gradients=rules.collect.output.gradients,
        selections=SELECTIONS,
    output:
        **SUMMARY,
    conda:
        "../../environment.yml"
    log:
        f"logs/{STUDY.name}/summarise.log",
    script:
        "../scripts/summarise.py"
