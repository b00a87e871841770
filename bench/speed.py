"""The speed issue's measurement: this tree against today's main, in one run.

    python -m bench.speed [--baseline e113ec9] [--quick] [--no-capacity] [--out bench/results]

The baseline (``--baseline REF``, by default e113ec9: main before the speed issue) is checked
out once into a git worktree, cache/baseline-REF (the checkout's ignored cache/, outside the
packages that mypy and the tests walk: a second ``bench`` under bench/ would break mypy), and
reused. Each tree is measured by its own code in subprocesses (cwd and PYTHONPATH = that tree,
its own models/shapes bundle: the bundle's format changes in this issue), and each subprocess
says where it imported ``stream`` from, which must be that tree. The trees take turns (this
tree, baseline, baseline, this tree, ...) so that the shared machine's noise hits both, and the
best of the rounds counts. On the 640x480 30 fps camera-like ``testsrc2`` input and on the
still scene, 60 s each:

1. rounds of :mod:`bench.speed_probe` per tree: decoding alone (bench.stages' ``decode``), the
   sampled pipeline over the file (bench's ``file_run``: the real pipeline at the bundle's
   sample_fps, the bundle loaded beforehand), and where each sampled frame's CPU time goes
   (decode, conversion, thumbnails, encoder, memory, captions, the rest of the inference
   thread in Python; ONNX Runtime on one thread);
2. one live 30 fps camera's p99 latency (each tree's ``bench.live``), rounds taking turns;
3. live capacity: the most 640x480 30 fps cameras with < 1% dropped and p99 < 200 ms, the
   majority of 3 trials near the answer (bench's capacity search, from 3 cameras up to 16;
   the two trees' searches take turns run by run). ``--no-capacity`` skips it.

Results: bench/results/speed.json (everything) and speed.md (the targets, this tree against
the baseline, and the CPU breakdown); with ``--quick`` speed-quick.json and .md. The full run
should take 15 to 20 minutes on 2 cores (a 60 s round is about 40 s per tree; the capacity
searches 20 to 30 live runs of 15 s, more where noise makes them walk down), ``--quick`` (10 s
inputs, one round, 6 s live runs) 2 to 4 minutes with the capacity searches, half a minute
without.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.__main__ import RESULTS, Plan, Search, capacity_steps, live_run
from bench.inputs import CACHE, bench_video, still_video
from bench.machine import describe
from bench.report import _num
from stream.cli.arguments import doc_parser
from stream.engines.settings import PipelineSettings
from stream.files import write_text_atomically
from stream.model.sessions import DEVICES

log = logging.getLogger(__name__)

THIS = Path(__file__).resolve().parents[1]  # this checkout
PROBE = Path(__file__).resolve().parent / "speed_probe.py"
WORKTREES = THIS / "cache"  # ignored by git, and no package's folder
BASELINE = "e113ec9"  # main before the speed issue
SIZE = (640, 480)
TREES = ("this", "baseline")
LABELS = {"this": "this tree", "baseline": "baseline"}
INPUTS = {"testsrc2": "640x480 testsrc2", "still": "still scene"}

# The targets: (figure, label, goal). A goal is (op, value) on this tree's figure, or
# (op, value, "x baseline") on this tree's figure against value times the baseline's; None for
# a figure shown for context.
Goal = tuple[str, float] | tuple[str, float, str] | None
GOALS: tuple[tuple[str, str, Goal], ...] = (
    ("ratio_to_decode.testsrc2", "sampled pipeline / decode only, 640x480 testsrc2",
     (">=", 0.6)),
    ("ratio_to_decode.still", "sampled pipeline / decode only, still scene", (">=", 0.5)),
    ("capacity", "live capacity, 640x480 30 fps cameras (< 1% dropped, p99 < 200 ms)",
     (">=", 2.0, "x baseline")),
    ("live_p99", "one live 30 fps camera: p99 latency (ms)", ("<=", 1.0, "x baseline")),
    ("pipeline_fps.testsrc2", "sampled pipeline, 640x480 testsrc2: source frames/s", None),
    ("pipeline_fps.still", "sampled pipeline, still scene: source frames/s", None),
    ("cpu_ms.testsrc2", "CPU ms per sampled frame, 640x480 testsrc2 (the breakdown's total)",
     None),
    ("cpu_ms.still", "CPU ms per sampled frame, still scene (the breakdown's total)", None),
)


@dataclass(frozen=True)
class SpeedPlan:
    """How much to measure: the full run, or --quick."""

    video_seconds: int = 60
    rounds: int = 3  # probe rounds per tree (files, breakdown); the best counts
    live_seconds: float = 20.0
    live_rounds: int = 3  # one-camera live runs per tree; the lowest p99 counts
    # From 3 cameras: 4 was main's capacity on a 2-core EPYC of this kind, but short runs on a
    # faster one (Zen 5) sustained 6 to 8, so the search goes up to twice that.
    capacity: Plan = field(default_factory=lambda: replace(
        Plan(), capacity_seconds=15.0, first_streams=3, max_streams=16, boundary_trials=3))


QUICK = SpeedPlan(video_seconds=10, rounds=1, live_seconds=6.0, live_rounds=1,
                  capacity=replace(Plan(), capacity_seconds=6.0, first_streams=3,
                                   max_streams=8, boundary_trials=3))


def get_args_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m bench.speed", __doc__)
    parser.add_argument("--baseline", default=BASELINE, metavar="REF",
                        help="the commit to compare against (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="short inputs, one round, short live runs (for development)")
    parser.add_argument("--no-capacity", dest="capacity", action="store_false",
                        help="skip the capacity searches (the longest part)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the pipelines' graphs run (default: auto); the breakdown "
                             "always runs on the CPU, on one thread")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results directory: speed.json and speed.md (default: "
                             "bench/results)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="where the inputs are cached (default: bench/cache)")
    parser.add_argument("--worktrees", type=Path, default=WORKTREES,
                        help="where the baseline's worktree goes (default: cache/ of this "
                             "checkout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    try:
        baseline = baseline_tree(args.baseline, args.worktrees)
    except SpeedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    plan = QUICK if args.quick else SpeedPlan()
    try:
        results = run(plan, {"this": THIS, "baseline": baseline}, args)
    except SpeedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    name = "speed-quick" if args.quick else "speed"
    paths = [args.out / f"{name}.json", args.out / f"{name}.md"]
    write_text_atomically(paths[0], json.dumps(results, indent=1) + "\n")
    write_text_atomically(paths[1], markdown(results))
    log.info("done in %.0f s: %s", results["wall_seconds"], ", ".join(str(p) for p in paths))
    return 0


class SpeedError(Exception):
    """A tree that cannot be checked out or measured."""


def baseline_tree(ref: str, cache: Path) -> Path:
    """The worktree of ``ref`` at ``cache``/baseline-REF: created once, then reused (moved to
    ``ref``'s commit again if ``ref`` is a branch that has moved)."""
    commit = _git(THIS, "rev-parse", "--verify", f"{ref}^{{commit}}")
    tree = cache / f"baseline-{ref.replace('/', '-')}"
    if not tree.exists():
        log.info("checking out %s (%s) into %s", ref, commit[:9], tree)
        cache.mkdir(parents=True, exist_ok=True)
        _git(THIS, "worktree", "add", "--detach", str(tree), commit)
    elif not (tree / ".git").exists():
        raise SpeedError(f"{tree} exists but is no git worktree: remove it")
    elif _git(tree, "rev-parse", "HEAD") != commit:
        _git(tree, "checkout", "--quiet", "--detach", commit)
    return tree


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SpeedError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def describe_tree(tree: Path) -> dict[str, Any]:
    dirty = bool(_git(tree, "status", "--porcelain", "--untracked-files=no"))
    return {"path": str(tree), "commit": _git(tree, "rev-parse", "--short=9", "HEAD"),
            "uncommitted_changes": dirty}


def probe(tree: Path, job: dict[str, Any]) -> dict[str, Any]:
    """One :mod:`bench.speed_probe` round in ``tree``, by that tree's own code."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump({"tree": str(tree), "bundle": str(tree / "models" / "shapes"), **job}, file)
    code = (f"import runpy, sys; sys.argv[1:] = [{file.name!r}]; "
            f"runpy.run_path({str(PROBE)!r}, run_name='__main__')")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(tree)),
                              timeout=1800)
    finally:
        os.unlink(file.name)
    if done.returncode != 0:
        raise SpeedError(f"{tree}: bench/speed_probe.py failed: "
                         f"{done.stderr.strip().splitlines()[-3:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["info"]["from_tree"]:
        raise SpeedError(f"{tree}: the measurement imported stream from "
                         f"{result['info']['stream_file']}, not from the tree")
    return result


def cpu_details() -> str:
    """The CPU's family, model and vector extensions from /proc/cpuinfo (as lscpu shows them):
    "AMD EPYC" alone names CPUs whose encoder speed differs threefold."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return ""
    flags = set(fields.get("flags", "").split())
    vector = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"),
                                      ("AVX512-VNNI", "avx512_vnni"), ("AMX", "amx_tile"))
              if flag in flags]
    return (f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, "
            + (", ".join(vector) or "no AVX2"))


def turns(rounds: int) -> list[str]:
    """The trees' order over ``rounds`` rounds: this, baseline, baseline, this, ... (a drift
    of the machine's speed during the run then favours neither)."""
    order: list[str] = []
    for k in range(rounds):
        order += list(TREES) if k % 2 == 0 else list(reversed(TREES))
    return order


def run(plan: SpeedPlan, trees: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    videos = {"testsrc2": bench_video(SIZE, plan.video_seconds, args.cache),
              "still": still_video(SIZE, plan.video_seconds, args.cache)}
    results: dict[str, Any] = {
        "plan": asdict(plan), "device": args.device, "baseline_ref": args.baseline,
        "trees": {name: describe_tree(tree) for name, tree in trees.items()},
        "inputs": {k: f"{INPUTS[k]}, {SIZE[0]}x{SIZE[1]} 30 fps H.264, {plan.video_seconds} s"
                   for k in videos}}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    job = {"device": args.device, "seconds": plan.video_seconds,
           "videos": {k: str(v) for k, v in videos.items()}}
    for k, name in enumerate(turns(plan.rounds)):
        log.info("round %d of %d: %s (files, breakdown)", k // 2 + 1, plan.rounds, LABELS[name])
        rounds[name].append(probe(trees[name], job))
    infos = {name: rounds[name][0]["info"] for name in trees}
    results["machine"] = describe(infos["this"].get("providers", ["CPUExecutionProvider"]))
    results["machine"]["cpu_details"] = cpu_details()
    for name in trees:
        results["trees"][name] |= {"imported": infos[name]["stream_file"],
                                   "sample_fps": infos[name]["sample_fps"],
                                   "pipeline": {"max_batch": infos[name]["max_batch"],
                                                "max_wait_ms": infos[name]["max_wait_ms"]}}
    results["files"] = {name: best_files(rounds[name]) for name in trees}
    results["breakdown"] = {name: best_breakdowns(rounds[name]) for name in trees}
    results["rounds"] = rounds

    def live_args(name: str) -> tuple[argparse.Namespace, PipelineSettings]:
        # each tree with its own bundle and its own defaults (pipeline and precision: a tree
        # from before --precision has no such option)
        pipeline = results["trees"][name]["pipeline"]
        return (argparse.Namespace(bundle=trees[name] / "models" / "shapes", device=args.device,
                                   hwaccel="none", precision=None),
                PipelineSettings(max_batch=pipeline["max_batch"],
                                 max_wait_ms=pipeline["max_wait_ms"]))

    results["live"] = {name: [] for name in trees}
    for name in turns(plan.live_rounds):
        log.info("live, 1 camera, %.0f s: %s", plan.live_seconds, LABELS[name])
        namespace, settings = live_args(name)
        try:
            live = _trimmed(live_run(namespace, videos["testsrc2"], 1, plan.live_seconds,
                                     settings, tree=trees[name]))
        except LIVE_FAILURES as error:  # that tree's figure is missing; the run goes on
            live = {"error": str(error)}
        results["live"][name].append(live)
    if args.capacity:
        capacity = plan.capacity

        def measure(name: str, streams: int) -> dict[str, Any]:
            log.info("capacity: %d camera(s), %.0f s: %s", streams, capacity.capacity_seconds,
                     LABELS[name])
            namespace, settings = live_args(name)
            return live_run(namespace, videos["testsrc2"], streams, capacity.capacity_seconds,
                            settings, tree=trees[name])

        results["capacity"] = alternate({name: capacity_steps(capacity) for name in trees},
                                        measure)
    results["targets"] = targets(figures(results))
    return results


LIVE_FAILURES = (RuntimeError, subprocess.SubprocessError, ValueError)  # see live_run


def alternate(searches: dict[str, Search],
              measure: Callable[[str, int], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run several capacity searches to their answers, one live run of each in turn. A search
    whose live run fails ends there, its answer the error."""
    answers: dict[str, dict[str, Any]] = {}
    pending: dict[str, int] = {}
    for name, search in searches.items():
        try:
            pending[name] = next(search)
        except StopIteration as answer:
            answers[name] = answer.value
    while pending:
        for name in list(pending):
            try:
                pending[name] = searches[name].send(measure(name, pending[name]))
            except StopIteration as answer:
                answers[name] = answer.value
                del pending[name]
            except LIVE_FAILURES as error:
                answers[name] = {"error": str(error)}
                del pending[name]
    return answers


def _trimmed(live: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in live.items() if not k.endswith("_samples")}


def best_files(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per input: the fastest decode and the fastest pipeline of the rounds, and their ratio."""
    out = {}
    for video in rounds[0]["videos"]:
        decode = max((r["videos"][video]["decode"]["decode"] for r in rounds),
                     key=lambda d: d["per_second"])
        pipeline = max((r["videos"][video]["pipeline"] for r in rounds),
                       key=lambda p: p["source_fps"])
        out[video] = {"decode": decode, "pipeline": pipeline,
                      "ratio_to_decode": round(pipeline["source_fps"] / decode["per_second"], 3)}
    return out


def best_breakdowns(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per input: the breakdown of the round whose total CPU per frame was lowest."""
    out = {}
    for video in rounds[0]["videos"]:
        candidates = [r["videos"][video]["breakdown"] for r in rounds]
        measured = [b for b in candidates if "error" not in b]
        out[video] = (min(measured, key=lambda b: _total(breakdown_rows(b)))
                      if measured else candidates[0])
    return out


# The breakdown's rows, in order, and the names behind them (see bench.speed_probe.WRAPPED).
DECODER_ROWS = ("decode", "conversion", "thumbnails (decoder threads)")
CORE_ROWS = ("thumbnails", "encoder", "memory", "captions", "Python")
THUMBNAILS = ("keyframes.thumbnails", "keyframes.signature")
NAMES = {"encoder": ("CaptionCore.encode",), "memory": ("CaptionCore._step_memory",),
         "captions": ("CaptionCore._greedy",)}
Row = tuple[str, float | None, str]  # category, CPU ms per sampled frame (None: n/a), a note


def breakdown_rows(b: dict[str, Any]) -> list[Row]:
    """Where a sampled frame's CPU time goes, from one probe breakdown: every category of
    :data:`DECODER_ROWS` and :data:`CORE_ROWS`, then the total. A name the tree lacks is
    ``None`` with where its time went instead ("n/a (folded into memory)")."""
    found: dict[str, bool] = b["found"]
    read, core = b["read"], b["core"]
    inside, outside = core["inside_ms"], core["outside_ms"]
    rows: list[Row] = []
    wrapped_read = sum(read["wrapped_ms"].values())
    rows.append(("decode", read["process_ms"] - wrapped_read, ""))
    if found.get("frames.frame_to_rgb"):
        rows.append(("conversion", read["wrapped_ms"].get("frames.frame_to_rgb", 0.0), ""))
    else:
        rows.append(("conversion", None, "n/a (folded into decode)"))
    thumbs = [n for n in THUMBNAILS if found.get(n)]
    in_core = sum(inside.get(n, 0.0) for n in thumbs)
    calls_in_core = sum(core["calls"].get(n, 0) for n in thumbs)
    decoder_side = (sum(read["wrapped_ms"].get(n, 0.0) + outside.get(n, 0.0) for n in thumbs)
                    + (b.get("decoder_thumbnails_ms") or 0.0))
    if not thumbs:
        rows.append(("thumbnails (decoder threads)", None, "n/a (not found)"))
    elif decoder_side > 0 or "decoder_thumbnails_ms" in b:
        alone = "timed alone, frame by frame" if "decoder_thumbnails_ms" in b else ""
        measured = None if b.get("decoder_thumbnails_ms", 0.0) is None else decoder_side
        rows.append(("thumbnails (decoder threads)", measured,
                     alone if measured is not None else "n/a (not measurable)"))
    else:
        rows.append(("thumbnails (decoder threads)", None, "n/a (in the inference thread)"))
    if not thumbs:
        rows.append(("thumbnails", None, "n/a (folded into Python)"))
    elif not calls_in_core:
        rows.append(("thumbnails", None, "n/a (in the decoder threads)"))
    else:
        rows.append(("thumbnails", in_core, ""))
    have = {k: all(found.get(n) for n in names) for k, names in NAMES.items()}
    for category in ("encoder", "memory", "captions"):
        names = NAMES[category]
        if have[category]:
            spent = sum(inside.get(n, 0.0) + outside.get(n, 0.0) for n in names)
            note = "memory + captions" if category == "memory" and not have["captions"] else ""
            rows.append((category, spent, note))
        elif category == "captions" and have["memory"]:
            rows.append((category, None, "n/a (folded into memory)"))
        else:
            rows.append((category, None, "n/a (folded into Python)"))
    if found.get("CaptionCore.step") and core["step_ms"] is not None:
        rows.append(("Python", inside.get("CaptionCore.step", 0.0), ""))
        core_total = core["step_ms"] + sum(
            v for k, v in outside.items() if k not in THUMBNAILS)
    else:
        rows.append(("Python", None, "n/a (CaptionCore.step not found)"))
        core_total = core["thread_ms"]
    total = sum(v for c, v, _ in rows if v is not None and c in DECODER_ROWS) + core_total
    rows.append(("total", total, ""))
    return rows


def _total(rows: list[Row]) -> float:
    return next(v for c, v, _ in rows if c == "total") or math.inf


def figures(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The targets' figures, each for this tree and the baseline (None where not measured)."""
    out: dict[str, dict[str, float | None]] = {}

    def put(key: str, get: Callable[[str, str], float | None], video: str = "") -> None:
        values: dict[str, float | None] = {}
        for name in TREES:
            try:
                values[name] = get(name, video)
            except (KeyError, TypeError, ValueError):  # not measured (or failed) there
                values[name] = None
        out[key] = values

    for video in INPUTS:
        put(f"ratio_to_decode.{video}", lambda n, v: results["files"][n][v]["ratio_to_decode"],
            video)
        put(f"pipeline_fps.{video}",
            lambda n, v: results["files"][n][v]["pipeline"]["source_fps"], video)
        put(f"cpu_ms.{video}",
            lambda n, v: round(_total(breakdown_rows(results["breakdown"][n][v])), 2), video)
    put("capacity", lambda n, _: results["capacity"][n]["streams"])
    put("live_p99", lambda n, _: min(r["latency_ms"]["p99"] for r in results["live"][n]))
    return out


def targets(measured: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    """The target table: every figure of :data:`GOALS` for this tree and the baseline, their
    ratio, the goal and whether this tree meets it (None: not measured, or no goal)."""
    rows = []
    for key, label, goal in GOALS:
        this, base = (measured.get(key, {}).get(name) for name in TREES)
        ratio = (round(this / base, 2) if this is not None and base else None)
        met: bool | None = None
        text = "-"
        if goal is not None:
            op, value = goal[0], goal[1]
            relative = len(goal) > 2
            text = f"{op} {value:g}" + (" x baseline" if relative else "")
            against = (value * base if base is not None else None) if relative else value
            if this is not None and against is not None:
                met = this >= against if op == ">=" else this <= against
        rows.append({"figure": key, "target": label, "this": this, "baseline": base,
                     "ratio": ratio, "goal": text, "met": met})
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The targets, the CPU breakdown and the details of a run, with the machine and trees."""
    m, trees = results["machine"], results["trees"]
    plan = results["plan"]

    def tree_line(name: str) -> str:
        t = trees[name]
        dirty = " + uncommitted changes" if t["uncommitted_changes"] else ""
        return (f"{LABELS[name]}: `{t['path']}` at {t['commit']}{dirty} (stream imported "
                f"from `{t['imported']}`; sample_fps {t['sample_fps']:g}, max_batch "
                f"{t['pipeline']['max_batch']}, max_wait_ms {t['pipeline']['max_wait_ms']:g})")

    lines = ["# The speed issue: this tree against the baseline (`python -m bench.speed`)", "",
             f"Machine: {m['cpu']} ({m.get('cpu_details', '')}), {m['cores']} cores, "
             f"{m['memory_gib']} GiB, provider {m['provider']}; onnxruntime-gpu "
             f"{m['versions'].get('onnxruntime-gpu', '-')}, "
             f"av {m['versions'].get('av', '-')}; {m['date']}; the run took "
             f"{results.get('wall_seconds', 0) / 60:.1f} minutes.", "",
             f"- {tree_line('this')}", f"- {tree_line('baseline')} (`--baseline "
             f"{results['baseline_ref']}`)",
             f"- inputs: {'; '.join(results['inputs'].values())}. The trees take turns; the "
             f"best of {plan['rounds']} round(s) per tree counts (files: fastest; breakdown: "
             f"lowest total; one live camera: lowest p99 of {plan['live_rounds']} run(s) of "
             f"{plan['live_seconds']:g} s).", "",
             "| target | this tree | baseline | this / baseline | goal | met |",
             "| --- | --- | --- | --- | --- | --- |"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {_num(t['this'])} | {_num(t['baseline'])} | "
                     f"{_num(t['ratio'])} | {t['goal']} | {met} |")
    if "capacity" not in results:
        lines += ["", "Capacity not measured (`--no-capacity`)."]
    for video, title in INPUTS.items():
        lines += ["", f"Where each sampled frame's CPU time goes, {title} (CPU ms per sampled "
                  "frame; decode and conversion: the tree's frame reading, decoder threads "
                  "included; the rest: its CaptionCore stepping 8 frames of one stream per "
                  "call, ONNX Runtime on one thread):", "",
                  "| category | baseline | this tree | this / baseline |",
                  "| --- | --- | --- | --- |"]
        tables = {}
        for name in TREES:
            b = results["breakdown"][name][video]
            tables[name] = {c: (v, n) for c, v, n in breakdown_rows(b)} if "error" not in b \
                else {}
        for category in (*DECODER_ROWS, *CORE_ROWS, "total"):
            cells = [_cell(*tables[name].get(category, (None, "error"))) for name in
                     ("baseline", "this")]
            base, this = (tables[name].get(category, (None, ""))[0]
                          for name in ("baseline", "this"))
            ratio = _num(round(this / base, 2)) if this is not None and base else "-"
            lines.append(f"| {category} | {cells[0]} | {cells[1]} | {ratio} |")
        for name in TREES:
            b = results["breakdown"][name][video]
            if "error" in b:
                lines.append(f"\n{LABELS[name]}: the breakdown failed: {b['error']}")
                continue
            graphs = ", ".join(f"{k} {v:.2f}" for k, v in b["core"]["graphs_ms"].items()) or "-"
            lines.append(f"\n{LABELS[name]}: encoder runs per sampled frame "
                         f"{b['core']['encoded_per_frame']:.3f}; ONNX Runtime's own runs, CPU "
                         f"ms per frame: {graphs}; the inference thread's share of the "
                         f"process's CPU while stepping: {b['core']['thread_share']}.")
    lines += ["", "Details (the best round of each tree):", "",
              "| figure | this tree | baseline |", "| --- | --- | --- |"]
    for video, title in INPUTS.items():
        files = {name: results["files"][name][video] for name in TREES}
        for label, get in (
                ("decode only, source frames/s", lambda f: f["decode"]["per_second"]),
                ("sampled pipeline, source frames/s", lambda f: f["pipeline"]["source_fps"]),
                ("sampled pipeline, realtime factor", lambda f: f["pipeline"]["realtime_factor"]),
                ("sampled pipeline, CPU %", lambda f: f["pipeline"]["cpu_percent"]),
                ("sampled pipeline, encoder calls per caption",
                 lambda f: f["pipeline"]["encoder_calls_per_frame"])):
            lines.append(f"| {title}: {label} | {_num(get(files['this']))} | "
                         f"{_num(get(files['baseline']))} |")
    live = {name: ", ".join(r["error"] if "error" in r else
                            f"{r['latency_ms']['p50']} / {r['latency_ms']['p99']} "
                            f"({r['dropped']} dropped)" for r in results["live"][name])
            for name in TREES}
    lines.append(f"| one live camera: p50 / p99 ms of each run | {live['this']} | "
                 f"{live['baseline']} |")
    if "capacity" in results:
        lines += ["", "Capacity runs (the median trial by p99 at each count):", "",
                  "| tree | cameras | trials sustained | p99 ms | p99 spread ms | dropped | "
                  "CPU |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name in TREES:
            capacity = results["capacity"][name]
            if "error" in capacity:
                lines.append(f"| {LABELS[name]}: failed | {capacity['error']} | | | | | |")
                continue
            for count, r in sorted(capacity["runs"].items(), key=lambda kv: int(kv[0])):
                spread = "-".join(str(v) for v in r.get("p99_spread_ms", []))
                lines.append(f"| {LABELS[name]} | {count} | {r['sustained_trials']}/"
                             f"{len(r['trials'])} | {r['latency_ms']['p99']} | {spread} | "
                             f"{r['dropped']} | {r['cpu_percent']}% |")
            limit = " (the search's limit)" if capacity["limit_reached"] else ""
            lines.append(f"| {LABELS[name]}: capacity | **{capacity['streams']}**{limit} "
                         f"| | | | | |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None, note: str) -> str:
    if value is None:
        return note or "-"
    return f"{value:.2f}" + (f" ({note})" if note else "")


if __name__ == "__main__":
    sys.exit(main())
