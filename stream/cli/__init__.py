"""The command lines over the library: ``run_stream.py`` (:mod:`stream.cli.live`),
``run_archive.py`` (:mod:`stream.cli.archive`), their argument helpers and exit codes."""
