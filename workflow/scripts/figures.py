from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from pathlib import Path
    from nnstudy import plots, schemas

    summary = {name: schemas.read(path, schemas.SUMMARY_TABLES[name]) for name, path in snakemake.input.items()}
    plots.draw_all(summary, snakemake.config["experiments"], Path(snakemake.output[0]).parent,
                   snakemake.config["curve_splits"])
