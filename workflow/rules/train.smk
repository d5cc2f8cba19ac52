rule train:
    input:
        unpack(lambda w: STUDY.job_inputs(w.key)),
    output:
        metrics=f"{R}/train/{{key}}/metrics.parquet",
        gradients=f"{R}/train/{{key}}/gradients.parquet",
        model=f"{R}/train/{{key}}/model.pt",
        manifest=f"{R}/train/{{key}}/run.json",
    params:
        spec=lambda w: json.dumps(STUDY.trained[w.key].spec),
        out=lambda w: STUDY.run_dir(w.key),
    threads: 1
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    conda:
        "../../environment.yml"
    log:
        f"logs/{STUDY.name}/train/{{key}}.log",
    shell:
        "python -m nnstudy train --spec-json {params.spec:q} --out {params.out} --threads {threads}"
        " --selections {input.selections} > {log} 2>&1"
