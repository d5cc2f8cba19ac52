from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from nnstudy import analyses
    from nnstudy.study import Study, load_selections
    from nnstudy.study.collect import labelled

    study = Study(snakemake.config)
    table = labelled(study, load_selections(snakemake.input.selections))
    for name, experiments in study.analyses().items():
        files = [f"{study.analyses_dir(e)}/{name}.parquet" for e in experiments]
        analyses.write_summary(name, table, files, snakemake.config["ci_level"], study.analysis_summary(name))
