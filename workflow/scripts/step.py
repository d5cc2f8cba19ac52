# Every script step of the workflow: the function of nnstudy.steps named as the rule, run in the
# warm process when there is one (nnstudy.warm).
from nnstudy.warm import step

step(snakemake, snakemake.rule)
