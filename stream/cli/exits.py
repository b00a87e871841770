"""The exit codes of the project's command lines, in one place (their ``--help`` lists them)."""

from __future__ import annotations

OK = 0
FAILED = 1  # a source (run_stream.py) or a video (run_archive.py) failed; the rest finished
USAGE = 2  # bad arguments (argparse's own code)
BUNDLE = 3  # the model bundle is missing, damaged or cannot run on the device
PIPELINE = 4  # run_stream.py: the pipeline itself failed (a bug, Ray unreachable)
OUTPUT = 4  # run_archive.py: the run cannot write its outputs or its manifest
BUSY = 5  # run_archive.py: another run holds the output folder
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
TERMINATED = 143  # SIGTERM (128 + SIGTERM)
