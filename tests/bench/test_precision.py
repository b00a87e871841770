"""bench.precision: fp32 against int8 on this CPU, in one table."""

from __future__ import annotations

from bench import precision


def test_measures_both_encoders_in_turns_and_tabulates(tiny_int8_bundle):
    results = precision.measure(tiny_int8_bundle, batches=[1, 3], threads=[1], rounds=2, calls=2)
    assert [(c["threads"], c["batch"]) for c in results["cells"]] == [(1, 1), (1, 3)]
    for cell in results["cells"]:
        assert cell["fp32"]["per_second"] > 0 and cell["int8"]["cpu_ms"] > 0
    text = precision.table(results)
    assert "| 1 | 3 |" in text and "int8 dot products:" in text
