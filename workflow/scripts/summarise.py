from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from nnstudy.aggregate import summarise_study
    from nnstudy.study import Study

    summarise_study(Study(snakemake.config), snakemake.input.selections, snakemake.input.runs,
                    snakemake.input.gradients, dict(snakemake.output.items()))
