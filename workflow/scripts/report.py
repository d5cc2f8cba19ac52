from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from pathlib import Path
    from nnstudy import report

    names = [Path(p).stem for p in snakemake.input.summary]
    report.write(snakemake.config, dict(zip(names, snakemake.input.summary)), snakemake.input.figures,
                 snakemake.input.manifests, snakemake.output[0])
