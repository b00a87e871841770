"""LRCN model, data pipeline, training and evaluation."""

from stream.cli.extras import explain_missing_extras

# A `python -m lrcn...` missing a module of an extra prints one line naming the extra, exit 2.
explain_missing_extras("lrcn", "train")
