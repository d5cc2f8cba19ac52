rule train:
    input:
        unpack(train_inputs),
    output:
        metrics=f"{R}/train/{{key}}/metrics.parquet",
        gradients=f"{R}/train/{{key}}/gradients.parquet",
        model=f"{R}/train/{{key}}/model.pt",
        manifest=f"{R}/train/{{key}}/run.json",
    log:
        f"logs/{STUDY.name}/train/{{key}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        spec=run_spec,
        out=run_dir,
    shell:
        "python -m nnstudy train --spec-json {params.spec:q} --out {params.out:q} --threads {threads}"
        " --selections {input.selections:q} >> {log:q} 2>&1"
