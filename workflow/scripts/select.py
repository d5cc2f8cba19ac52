from nnstudy.logs import logged

with logged(snakemake.log[0], snakemake.output):
    from nnstudy.study import Study, select

    select(Study(snakemake.config), snakemake.wildcards.name, snakemake.output[0])
