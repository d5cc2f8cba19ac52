from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from nnstudy import analyses
    from nnstudy.study import Study, load_selections
    from nnstudy.study.collect import labelled

    study = Study(snakemake.config)
    experiment = snakemake.wildcards.experiment
    table = labelled(study, load_selections(snakemake.input.selections), [experiment])
    analyses.write_summaries(experiment, snakemake.config["experiments"][experiment]["analyses"], table,
                             study.analyses_dir(experiment), snakemake.config["ci_level"], snakemake.output[0])
