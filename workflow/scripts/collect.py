from nnstudy.study import Study, collect, load_selections

collect(Study(snakemake.config), load_selections(snakemake.input.selections), snakemake.output.runs,
        snakemake.output.gradients)
