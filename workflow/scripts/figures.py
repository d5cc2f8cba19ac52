from pathlib import Path

from nnstudy import plots, schemas

summary = {name: schemas.read(path, schemas.SUMMARY_TABLES[name]) for name, path in snakemake.input.items()}
plots.draw_all(summary, list(snakemake.config["experiments"]), any("transfer_vs_joint" in f for f in snakemake.output),
               Path(snakemake.output[0]).parent)
