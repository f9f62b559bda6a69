"""`python -m vocseg ARGS`: the `vocseg` command where its console script is not installed
(vocseg run from a source tree with PYTHONPATH=src, as benchmarks/gpu/check.sh does)."""

from vocseg.cli import main

if __name__ == "__main__":
    main()
