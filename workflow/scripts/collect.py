from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from nnstudy.study import Study, collect, load_selections
    from nnstudy.runs import release

    study = Study(snakemake.config)
    collect(study, load_selections(snakemake.input.selections), snakemake.output.runs, snakemake.output.gradients)
    for key in study.trained:  # every run is recorded as done now: its checkpoint is no longer needed
        release(study.run_dir(key))
