from nnstudy.logs import logged

with logged(snakemake.log[0]):
    from nnstudy.study import Study, collect, load_selections

    collect(Study(snakemake.config), load_selections(snakemake.input.selections), snakemake.output.runs,
            snakemake.output.gradients)
