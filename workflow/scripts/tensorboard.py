from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    import pandas as pd
    from nnstudy import schemas, tensorboard

    curves = schemas.read(snakemake.input.curves, schemas.SUMMARY_TABLES["curves"])
    tensorboard.write(pd.read_parquet(snakemake.input.runs), curves, snakemake.output[0])
