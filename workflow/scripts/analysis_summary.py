from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from nnstudy import analyses
    from nnstudy.study import Study, load_selections
    from nnstudy.study.collect import labelled

    study = Study(snakemake.config)
    table = labelled(study, load_selections(snakemake.input.selections))
    analyses.write_summary(snakemake.wildcards.analysis, table, snakemake.input.files,
                           snakemake.config["ci_level"], snakemake.output[0])
