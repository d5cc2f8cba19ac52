import sys

from .warm import client

code = client(sys.argv[1:])  # in a Snakemake job: run by the warm process (nnstudy.warm)
if code is None:
    from .cli import main

    code = main()
raise SystemExit(code)
