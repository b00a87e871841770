"""The per-tree side of ``python -m bench.speed``: one round of file measurements inside the
tree measured, printed as one JSON object.

bench.speed runs this file by its path, with cwd and PYTHONPATH = the tree measured, so that
every ``stream`` and ``bench`` import below is that tree's own code (a baseline checked out
from before this file existed has no copy of it)::

    cd TREE && PYTHONPATH=TREE python -c "import runpy, sys; sys.argv[1:] = ['JOB.json'];
        runpy.run_path('.../bench/speed_probe.py', run_name='__main__')"

For each input video, in this order:

1. decoding alone, and decoding all frames plus converting the sampled ones (the tree's
   ``bench.stages.decode_limits``);
2. the real pipeline over the file at the bundle's sample_fps (the tree's
   ``bench.__main__.file_run``: the bundle loaded beforehand, start-up excluded);
3. where each sampled frame's CPU time goes: the sampled frames read through the tree's
   ``stream.media.frames`` (its ``read_sampled_frames``: the process's CPU time, the decoder's
   threads included, less the conversion, ``frame_to_rgb``, timed on the calling thread), then
   stepped through its ``CaptionCore`` in batches of 8 frames of one stream (the tree's
   ``bench.stages.core_limit``: a warm-up pass and a timed pass), with ONNX Runtime on ONE
   intra-op thread so that ``time.thread_time()`` around a call is its whole CPU cost. What
   exists in the tree is wrapped by name (:data:`WRAPPED`), exclusive of the wrapped calls
   inside it; a name the tree lacks is reported missing, and its time falls to whatever calls
   it (bench.speed says where). A tree whose core no longer computes the key-frame thumbnails
   gets them timed alone, frame by frame, as its decoder threads would compute them.

Nothing from ``stream`` or ``bench`` is imported at module level: the tests import this file
from this tree for its pure parts.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sized
from pathlib import Path
from typing import Any

CORE = "stream.model.captioning"
KEYFRAMES = "stream.model.keyframes"
STEP = "CaptionCore.step"  # the core's entry point: its time is the inference thread's total
# What is timed, by name: (module, class or None for a module function, attribute).
WRAPPED: dict[str, tuple[str, str | None, str]] = {
    STEP: (CORE, "CaptionCore", "step"),
    "CaptionCore.encode": (CORE, "CaptionCore", "encode"),
    "CaptionCore._step_memory": (CORE, "CaptionCore", "_step_memory"),
    "CaptionCore._greedy": (CORE, "CaptionCore", "_greedy"),
    "keyframes.thumbnails": (KEYFRAMES, None, "thumbnails"),
    "keyframes.signature": (KEYFRAMES, None, "signature"),
    "frames.frame_to_rgb": ("stream.media.frames", None, "frame_to_rgb"),
}
THUMBNAILS = ("keyframes.thumbnails", "keyframes.signature")
BATCH = 8  # frames per core step: a file's pipeline batches 8 frames of its one stream


class CallTimer:
    """CPU time of wrapped calls on the calling thread, each exclusive of the wrapped calls
    made inside it, split into calls inside :data:`STEP` and calls outside it."""

    def __init__(self, clock: Callable[[], float] = time.thread_time) -> None:
        self.clock = clock
        self.inside: dict[str, float] = {}  # seconds, exclusive, within a STEP call
        self.outside: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.rows: dict[str, int] = {}  # frames passed (first argument after self)
        self.inclusive: dict[str, float] = {}
        self._stack: list[tuple[str, list[float]]] = []

    def wrap(self, name: str, function: Callable[..., Any], method: bool) -> Callable[..., Any]:
        for table in (self.inside, self.outside, self.inclusive):
            table.setdefault(name, 0.0)
        self.calls.setdefault(name, 0)
        self.rows.setdefault(name, 0)

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            within = any(n == STEP for n, _ in self._stack)
            children = [0.0]
            self._stack.append((name, children))
            start = self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent = self.clock() - start
                self._stack.pop()
                (self.inside if within or name == STEP else self.outside)[name] += (
                    spent - children[0])
                self.inclusive[name] += spent
                self.calls[name] += 1
                first = args[1] if method and len(args) > 1 else args[0] if args else None
                self.rows[name] += len(first) if isinstance(first, Sized) else 0
                if self._stack:
                    self._stack[-1][1][0] += spent

        return timed


@contextlib.contextmanager
def wrapped(timer: CallTimer) -> Iterator[dict[str, bool]]:
    """Wrap every name of :data:`WRAPPED` that the loaded tree has; yields which were found.
    A module function is replaced wherever a loaded ``stream`` module holds that same object
    (``from stream.model.keyframes import thumbnails`` copies it into the importer)."""
    undo: list[Callable[[], None]] = []
    found: dict[str, bool] = {}
    try:
        for name, (module_name, owner_name, attribute) in WRAPPED.items():
            module = sys.modules.get(module_name)
            owner: Any = getattr(module, owner_name, None) if owner_name else module
            raw = vars(owner).get(attribute) if owner is not None else None
            found[name] = raw is not None
            if raw is None:
                continue
            if owner_name is not None:
                undo.append(_patch_method(owner, attribute, raw, timer.wrap(
                    name, raw.__func__ if isinstance(raw, staticmethod) else raw,
                    method=not isinstance(raw, staticmethod))))
                continue
            timed = timer.wrap(name, raw, method=False)
            for loaded in [m for k, m in list(sys.modules.items())
                           if k == "stream" or k.startswith("stream.")]:
                for key, value in list(vars(loaded).items()):
                    if value is raw:
                        setattr(loaded, key, timed)
                        undo.append(functools.partial(setattr, loaded, key, raw))
        yield found
    finally:
        for step in reversed(undo):
            step()


def _patch_method(owner: type, attribute: str, raw: Any,
                  timed: Callable[..., Any]) -> Callable[[], None]:
    setattr(owner, attribute, staticmethod(timed) if isinstance(raw, staticmethod) else timed)
    return functools.partial(setattr, owner, attribute, raw)


@contextlib.contextmanager
def graph_timer(sessions: dict[str, Any], spent: dict[str, float]) -> Iterator[None]:
    """Inclusive CPU seconds of ONNX Runtime's session runs, by the bundle's graph name: a
    cross-check of the wrapped methods (a renamed method's graph time still shows here)."""
    import onnxruntime as ort

    names = {id(session): name for name, session in sessions.items()}
    originals = {k: getattr(ort.InferenceSession, k) for k in ("run", "run_with_iobinding")}

    def timing(original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(session: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return original(session, *args, **kwargs)
            finally:
                name = names.get(id(session), "other")
                spent[name] = spent.get(name, 0.0) + time.thread_time() - start
        return timed

    for key, original in originals.items():
        setattr(ort.InferenceSession, key, timing(original))
    try:
        yield
    finally:
        for key, original in originals.items():
            setattr(ort.InferenceSession, key, original)


def breakdown(bundle: Path, video: Path) -> dict[str, Any]:
    """CPU ms per sampled frame, by wrapped name, of reading ``video``'s sampled frames and of
    stepping them through the tree's core (see the module's docstring)."""
    from bench.stages import core_limit
    from stream.media.frames import read_sampled_frames
    from stream.model.bundle import open_bundle
    from stream.model.sessions import SessionSettings

    loaded = open_bundle(bundle, SessionSettings(device="cpu", threads=1))
    size = loaded.bundle.input_size
    reading = CallTimer()
    with wrapped(reading) as found:
        process = time.process_time()  # the decoder's threads too
        read = read_sampled_frames(video, loaded.bundle.sample_fps, (size, size))
        process = time.process_time() - process
    frames, times = read[0], read[1]
    sampled = len(frames)
    timer = CallTimer()
    graphs: dict[str, float] = {}
    sessions = getattr(loaded, "sessions", None)
    with wrapped(timer), graph_timer(sessions if isinstance(sessions, dict) else {}, graphs):
        thread, started = time.thread_time(), time.process_time()
        core_limit(loaded, frames, times, BATCH, 1, 1)  # a warm-up pass and one timed pass
        thread, started = time.thread_time() - thread, time.process_time() - started
    stepped = timer.rows.get(STEP) or 2 * (sampled // BATCH * BATCH)
    ms = 1000 / max(1, stepped)
    out: dict[str, Any] = {
        "sampled_frames": sampled, "stepped_frames": stepped, "found": found,
        "read": {"process_ms": 1000 * process / max(1, sampled),
                 "wrapped_ms": {k: 1000 * v / max(1, sampled)
                                for k, v in reading.outside.items() if reading.calls[k]}},
        "core": {"calls": dict(timer.calls),
                 "inside_ms": {k: v * ms for k, v in timer.inside.items()},
                 "outside_ms": {k: v * ms for k, v in timer.outside.items() if v > 0},
                 "step_ms": timer.inclusive.get(STEP, 0.0) * ms if timer.calls.get(STEP)
                 else None,
                 "thread_ms": thread * ms,  # the whole harness: steps, slicing, forgetting
                 "thread_share": round(thread / started, 3) if started > 0 else None,
                 "graphs_ms": {k: v * ms for k, v in graphs.items()},
                 "encoded_per_frame": timer.rows.get("CaptionCore.encode", 0) / max(1, stepped)}}
    thumbs = [n for n in THUMBNAILS if found[n]]
    if thumbs and not any(timer.calls[n] or reading.calls[n] for n in thumbs):
        out["decoder_thumbnails_ms"] = _thumbnails_alone(loaded.bundle, frames)
    return out


def _thumbnails_alone(bundle: Any, frames: Any) -> float | None:
    """CPU ms per frame of the key-frame thumbnail and signature, one frame at a time as a
    decoder thread would compute them, for a tree whose core no longer calls them."""
    keyframes = sys.modules[KEYFRAMES]
    try:
        start = time.thread_time()
        for i in range(len(frames)):
            thumbs = keyframes.thumbnails(frames[i:i + 1], bundle.motion_pool)
            keyframes.signature(bundle.keyframes, thumbs)
        return 1000 * (time.thread_time() - start) / max(1, len(frames))
    except (TypeError, AttributeError, ValueError):  # a changed signature: not measurable
        return None


def info(tree: Path, bundle: Path) -> dict[str, Any]:
    """Which code this process runs, and the tree's pipeline defaults and bundle."""
    import bench
    import stream
    from stream.engines.settings import PipelineSettings
    from stream.model.bundle import read_bundle

    defaults = PipelineSettings()
    read = read_bundle(bundle)
    return {"stream_file": stream.__file__, "bench_file": bench.__file__,
            "from_tree": all(Path(m.__file__ or "").resolve().is_relative_to(tree.resolve())
                             for m in (stream, bench)),
            "max_batch": defaults.max_batch, "max_wait_ms": defaults.max_wait_ms,
            "sample_fps": read.sample_fps, "input_size": read.input_size}


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """One round: :func:`info`, then for each video decode limits, the pipeline, the
    breakdown."""
    tree, bundle = Path(job["tree"]), Path(job["bundle"])
    out: dict[str, Any] = {"info": info(tree, bundle), "videos": {}}
    if job.get("info_only") or not out["info"]["from_tree"]:
        return out
    from bench.__main__ import file_run
    from bench.stages import decode_limits
    from stream.engines.settings import PipelineSettings
    from stream.model.bundle import open_bundle
    from stream.model.sessions import SessionSettings

    loaded = open_bundle(bundle, SessionSettings(device=job["device"]))
    out["info"]["providers"] = list(loaded.providers)
    size = (loaded.bundle.input_size,) * 2
    seconds = job["seconds"]
    for name, video in job["videos"].items():
        decode = {k: r.to_json() for k, r in decode_limits(
            Path(video), size, loaded.bundle.sample_fps, 1).items()}
        pipeline = file_run(loaded, Path(video), seconds, PipelineSettings())
        pipeline["ratio_to_decode"] = round(pipeline["source_fps"]
                                            / decode["decode"]["per_second"], 3)
        entry: dict[str, Any] = {"decode": decode, "pipeline": pipeline}
        try:
            entry["breakdown"] = breakdown(bundle, Path(video))
        except Exception as error:  # noqa: BLE001 - a tree whose core changed: say so, go on
            entry["breakdown"] = {"error": f"{type(error).__name__}: {error}"}
        out["videos"][name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    result = json.dumps(measure(job))
    print(f"\n{result}")  # the last line: anything the tree printed before stays above it
    return 0


if __name__ == "__main__":
    sys.exit(main())
