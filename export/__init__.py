"""Turn a training checkpoint into a model bundle the torch-free runtime runs.

``python -m export --checkpoint runs/shapes/best.pt --out models/shapes`` writes the bundle;
``python -m export.validate models/shapes`` checks one; ``python -m export.parity`` compares a
bundle's captions with the PyTorch model's. See stream/model/bundle.py for the format.
"""

from stream.cli.extras import explain_missing_extras

# A `python -m export...` missing a module of an extra prints one line naming the extra, exit 2.
explain_missing_extras("export", "train")
