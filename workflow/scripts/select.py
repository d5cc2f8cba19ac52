from nnstudy.study import Study, select

select(Study(snakemake.config), snakemake.wildcards.name, snakemake.output[0])
