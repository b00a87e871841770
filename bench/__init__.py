"""Benchmarks of the streaming runtime: ``python -m bench`` (``make bench``); see __main__."""
