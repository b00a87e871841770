"""bench.speed's pure parts: the target table, the CPU breakdown's rows (names a tree lacks
included), the call timer, the trees' turns. Nothing here times anything."""

from __future__ import annotations

import itertools

import pytest

from bench import speed, speed_probe
from bench.__main__ import Plan, capacity_steps, replace


def _figures(**values: tuple[float | None, float | None]) -> dict:
    return {key.replace("__", "."): {"this": this, "baseline": base}
            for key, (this, base) in values.items()}


def test_the_target_table_compares_this_tree_with_its_goal_and_the_baseline():
    rows = {r["figure"]: r for r in speed.targets(_figures(
        ratio_to_decode__testsrc2=(0.62, 0.28), ratio_to_decode__still=(0.41, 0.2),
        capacity=(8, 4), live_p99=(36.0, 35.0), pipeline_fps__testsrc2=(440.0, 220.0)))}
    assert [r["figure"] for r in speed.targets({})] == [g[0] for g in speed.GOALS]
    # an absolute goal: this tree's figure alone
    assert rows["ratio_to_decode.testsrc2"] | {"goal": ">= 0.6", "met": True, "ratio": 2.21} \
        == rows["ratio_to_decode.testsrc2"]
    assert rows["ratio_to_decode.still"]["met"] is False
    # against the baseline: 2 x 4 cameras met; a p99 above the baseline's is not
    assert (rows["capacity"]["goal"], rows["capacity"]["met"]) == (">= 2 x baseline", True)
    assert rows["live_p99"]["met"] is False
    # context only: no goal, no verdict; not measured: no verdict either
    assert (rows["pipeline_fps.testsrc2"]["goal"], rows["pipeline_fps.testsrc2"]["met"]) == (
        "-", None)
    assert rows["cpu_ms.still"] | {"this": None, "baseline": None, "met": None} \
        == rows["cpu_ms.still"]


@pytest.mark.parametrize("this, base, met", [
    (7, 4, False),  # short of twice the baseline
    (9, 4, True),
    (9, None, None),  # the baseline's search did not run: no verdict
    (None, 4, None),
])
def test_a_goal_against_the_baseline_needs_both_figures(this, base, met):
    row = next(r for r in speed.targets(_figures(capacity=(this, base)))
               if r["figure"] == "capacity")
    assert row["met"] is met


def _breakdown(**changes) -> dict:
    """A probe's breakdown of a tree like e113ec9's (every name found and called in the core),
    with ``changes`` merged into it."""
    names = list(speed_probe.WRAPPED)
    b = {"sampled_frames": 100, "stepped_frames": 192,
         "found": dict.fromkeys(names, True),
         "read": {"process_ms": 4.0, "wrapped_ms": {"frames.frame_to_rgb": 0.5}},
         "core": {"calls": dict.fromkeys(names, 24) | {"frames.frame_to_rgb": 0},
                  "inside_ms": {"CaptionCore.step": 0.1, "CaptionCore.encode": 3.0,
                                "CaptionCore._step_memory": 0.5, "CaptionCore._greedy": 0.2,
                                "keyframes.thumbnails": 0.08, "keyframes.signature": 0.02},
                  "outside_ms": {}, "step_ms": 3.9, "thread_ms": 4.0, "thread_share": 1.0,
                  "graphs_ms": {}, "encoded_per_frame": 0.6}}
    for key, value in changes.items():
        b[key] = b[key] | value if isinstance(value, dict) else value
    return b


def _rows(b: dict) -> dict:
    return {category: (value, note) for category, value, note in speed.breakdown_rows(b)}


def test_the_breakdown_of_a_tree_with_every_name():
    rows = _rows(_breakdown())
    assert list(rows) == [*speed.DECODER_ROWS, *speed.CORE_ROWS, "total"]
    assert rows["decode"] == (3.5, "")  # the read's CPU less the conversion
    assert rows["conversion"] == (0.5, "")
    assert rows["thumbnails (decoder threads)"] == (None, "n/a (in the inference thread)")
    assert rows["thumbnails"][0] == pytest.approx(0.1)
    assert (rows["encoder"], rows["memory"], rows["captions"]) == ((3.0, ""), (0.5, ""),
                                                                    (0.2, ""))
    assert rows["Python"] == (0.1, "")  # the step's own time, outside every wrapped call
    assert rows["total"][0] == pytest.approx(4.0 + 3.9)


def test_names_a_tree_lacks_are_reported_where_their_time_went():
    """A tree whose captions are decoded inside the memory graph (no _greedy), whose
    thumbnails are computed by the decoder threads (never called in the core) and which
    converts frames otherwise (no frame_to_rgb)."""
    b = _breakdown(found={"CaptionCore._greedy": False, "frames.frame_to_rgb": False},
                   read={"process_ms": 4.0, "wrapped_ms": {}},
                   decoder_thumbnails_ms=0.12)
    b["core"] |= {"calls": b["core"]["calls"] | {"keyframes.thumbnails": 0,
                                                 "keyframes.signature": 0},
                  "inside_ms": {"CaptionCore.step": 0.1, "CaptionCore.encode": 3.0,
                                "CaptionCore._step_memory": 0.6}, "step_ms": 3.7}
    del b["core"]["calls"]["CaptionCore._greedy"]
    rows = _rows(b)
    assert rows["captions"] == (None, "n/a (folded into memory)")
    assert rows["memory"] == (0.6, "memory + captions")
    assert rows["conversion"] == (None, "n/a (folded into decode)")
    assert rows["decode"] == (4.0, "")
    assert rows["thumbnails"] == (None, "n/a (in the decoder threads)")
    assert rows["thumbnails (decoder threads)"] == (0.12, "timed alone, frame by frame")
    assert rows["total"][0] == pytest.approx(4.0 + 0.12 + 3.7)


def test_without_the_memory_method_or_the_step_everything_falls_to_python():
    b = _breakdown(found={"CaptionCore._step_memory": False, "CaptionCore._greedy": False,
                          "CaptionCore.step": False, "keyframes.thumbnails": False,
                          "keyframes.signature": False})
    b["core"] |= {"step_ms": None, "thread_ms": 5.0}
    rows = _rows(b)
    assert rows["memory"] == (None, "n/a (folded into Python)")
    assert rows["captions"] == (None, "n/a (folded into Python)")
    assert rows["thumbnails"] == (None, "n/a (folded into Python)")
    assert rows["thumbnails (decoder threads)"] == (None, "n/a (not found)")
    assert rows["Python"] == (None, "n/a (CaptionCore.step not found)")
    assert rows["total"][0] == pytest.approx(4.0 + 5.0)  # the whole stepping's thread time


def test_the_call_timer_counts_each_call_exclusive_of_the_wrapped_calls_inside_it():
    ticks = itertools.count()
    timer = speed_probe.CallTimer(clock=lambda: float(next(ticks)))
    inner = timer.wrap("CaptionCore.encode", lambda self, frames: len(frames), method=True)

    def step(self, frames):
        return inner(self, frames) + inner(self, frames)

    outer = timer.wrap(speed_probe.STEP, step, method=True)
    assert outer(None, [1, 2, 3]) == 6
    assert inner(None, [1]) == 1  # outside a step: counted apart
    # each inner call spans 1 tick; the step 5 (4 of them its children's and its own)
    assert timer.inside == {speed_probe.STEP: 3.0, "CaptionCore.encode": 2.0}
    assert timer.outside == {speed_probe.STEP: 0.0, "CaptionCore.encode": 1.0}
    assert timer.rows == {speed_probe.STEP: 3, "CaptionCore.encode": 7}
    assert timer.calls == {speed_probe.STEP: 1, "CaptionCore.encode": 3}


def test_wrapping_patches_every_stream_module_holding_the_function_and_restores_it(
        monkeypatch):
    import stream.model.captioning as captioning
    import stream.model.keyframes as keyframes

    original, method = keyframes.thumbnails, captioning.CaptionCore._greedy
    monkeypatch.setitem(speed_probe.WRAPPED, "CaptionCore._gone",
                        ("stream.model.captioning", "CaptionCore", "_gone"))
    monkeypatch.setitem(speed_probe.WRAPPED, "nowhere.f", ("stream.nowhere", None, "f"))
    with speed_probe.wrapped(speed_probe.CallTimer()) as found:
        assert captioning.thumbnails is keyframes.thumbnails is not original
        assert captioning.thumbnails.__wrapped__ is original
        assert captioning.CaptionCore._greedy is not method
    assert found["CaptionCore._greedy"] and found["keyframes.thumbnails"]
    assert not found["CaptionCore._gone"] and not found["nowhere.f"]
    assert captioning.thumbnails is keyframes.thumbnails is original
    assert captioning.CaptionCore._greedy is method


def test_the_trees_take_turns():
    assert speed.turns(3) == ["this", "baseline", "baseline", "this", "this", "baseline"]


def test_two_capacity_searches_run_one_live_run_each_in_turn():
    """Simulated machines: this tree sustains 8 cameras, the baseline 4."""
    plan = replace(Plan(), first_streams=3, max_streams=10)
    limits = {"this": 8, "baseline": 4}
    order: list[str] = []

    def measure(name: str, streams: int) -> dict:
        order.append(name)
        p99 = 50.0 if streams <= limits[name] else 400.0
        return {"streams": streams, "captioned": 100, "dropped": 0, "dropped_fraction": 0.0,
                "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": p99, "max": p99}}

    answers = speed.alternate({n: capacity_steps(plan) for n in speed.TREES}, measure)
    assert {n: a["streams"] for n, a in answers.items()} == limits
    first = min(order.count("this"), order.count("baseline"))
    assert order[:2 * first] == ["this", "baseline"] * first  # turns while both search


def test_a_search_whose_live_run_fails_ends_with_the_error_and_the_other_goes_on():
    plan = replace(Plan(), first_streams=3, max_streams=4)

    def measure(name: str, streams: int) -> dict:
        if name == "baseline":
            raise RuntimeError("bench.live failed: ['ImportError: ...']")
        return {"streams": streams, "captioned": 100, "dropped": 0, "dropped_fraction": 0.0,
                "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": 50.0, "max": 50.0}}

    answers = speed.alternate({n: capacity_steps(plan) for n in speed.TREES}, measure)
    assert answers["this"]["streams"] == 4
    assert answers["baseline"] == {"error": "bench.live failed: ['ImportError: ...']"}


def test_the_report_renders_missing_names_failures_and_gaps():
    from dataclasses import asdict

    lacking = _breakdown(found={"CaptionCore._greedy": False})
    del lacking["core"]["inside_ms"]["CaptionCore._greedy"]
    run = {"captioned": 60, "dropped": 0, "cpu_percent": 50.0, "sustained_trials": 3,
           "trials": [{}] * 3, "p99_spread_ms": [40.0, 60.0],
           "latency_ms": {"p50": 20.0, "p95": 40.0, "p99": 50.0, "max": 60.0}}
    results = {
        "machine": {"cpu": "AMD EPYC", "cpu_details": "family 26 model 2, AVX2", "cores": 2,
                    "memory_gib": 8.0, "provider": "CPUExecutionProvider", "versions": {},
                    "date": "2026-12-05"},
        "trees": {n: {"path": f"/{n}", "commit": "abc", "uncommitted_changes": n == "this",
                      "imported": f"/{n}/stream/__init__.py", "sample_fps": 10.0,
                      "pipeline": {"max_batch": 8, "max_wait_ms": 20.0}} for n in speed.TREES},
        "baseline_ref": "e113ec9", "plan": asdict(speed.QUICK), "wall_seconds": 60.0,
        "inputs": {v: v for v in speed.INPUTS},
        "files": {n: {v: {"decode": {"per_second": 1000.0, "cpu_ms": 1.0},
                          "pipeline": {"source_fps": 500.0, "realtime_factor": 16.7,
                                       "cpu_percent": 90, "encoder_calls_per_frame": 0.6},
                          "ratio_to_decode": 0.5} for v in speed.INPUTS} for n in speed.TREES},
        "breakdown": {"this": {"testsrc2": lacking, "still": _breakdown()},
                      "baseline": {"testsrc2": _breakdown(), "still": {"error": "boom"}}},
        "live": {"this": [run], "baseline": [{"error": "bench.live failed"}]},
        "capacity": {"this": {"streams": 8, "limit_reached": True, "runs": {"8": run}},
                     "baseline": {"error": "bench.live failed"}}}
    results["targets"] = speed.targets(speed.figures(results))
    text = speed.markdown(results)
    assert "n/a (folded into memory)" in text and "(memory + captions)" in text
    assert "the breakdown failed: boom" in text and "baseline: failed" in text
    assert "+ uncommitted changes" in text and "family 26 model 2" in text
    assert "**8** (the search's limit)" in text
    rows = {r["figure"]: r for r in results["targets"]}
    assert (rows["capacity"]["this"], rows["capacity"]["baseline"]) == (8, None)
    assert (rows["live_p99"]["this"], rows["live_p99"]["baseline"]) == (50.0, None)
    assert rows["cpu_ms.still"]["baseline"] is None
