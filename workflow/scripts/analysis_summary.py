from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from nnstudy import analyses
    from nnstudy.study import Study, load_selections
    from nnstudy.study.collect import labelled

    study = Study(snakemake.config)
    table = labelled(study, load_selections(snakemake.input.selections))
    name = snakemake.wildcards.analysis
    files = [f"{folder}/{name}.parquet" for folder in snakemake.input.experiments]
    analyses.write_summary(name, table, files, snakemake.config["ci_level"], snakemake.output[0])
