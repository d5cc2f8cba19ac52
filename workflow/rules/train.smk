# A training job trains up to `runs_per_job` runs (whole variants of one experiment) one after
# another in one process; training goes before analyses, the longest chains of training first
# (job_priority: a job, then what waits on it through selections and transfers). Each run keeps
# its own folder, atomic outputs, checkpoint and resume, and the analyses its experiments ask of
# it (computed here, from the model in memory); the job's file lists them once all have
# finished. A killed job resumes its unfinished runs only: finished ones return at once.
rule train:
    input:
        unpack(train_inputs),
    output:
        f"{R}/jobs/{{job}}.json",
    log:
        f"logs/{STUDY.name}/train/{{job}}.log",
    priority: job_priority
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        runs=job_runs,
        what=job_description,
    message:
        "train {params.what}"
    shell:
        "python -m nnstudy train --runs-json {params.runs:q} --replace --done {output:q} --threads {threads}"
        " --selections {input.selections:q} >> {log:q} 2>&1"
