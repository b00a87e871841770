"""Benchmarks of the streaming runtime: ``python -m bench`` (``make bench``); see __main__."""

from stream.cli.extras import explain_missing_extras

# A `python -m bench...` missing a module of an extra prints one line naming the extra, exit 2.
explain_missing_extras("bench", "bench")
