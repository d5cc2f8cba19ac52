from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from pathlib import Path
    from nnstudy import report
    from nnstudy.study import Study

    study = Study(snakemake.config)
    names = [Path(p).stem for p in snakemake.input.summary]
    manifests = [f"{study.run_dir(k)}/run.json" for k in study.trained]
    report.write(snakemake.config, dict(zip(names, snakemake.input.summary)), snakemake.input.figures,
                 manifests, snakemake.output[0], snakemake.input.analyses)
