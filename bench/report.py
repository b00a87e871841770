"""Benchmark results as JSON (everything), a Markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stream.files import write_atomically, write_text_atomically

EVERY = "_encode_every_frame"  # suffix of the results measured with every frame encoded


def write_report(results: dict[str, Any], out: Path, name: str) -> list[Path]:
    """Write NAME.json, NAME.md and NAME.png under ``out``; returns their paths."""
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.png"]
    write_text_atomically(paths[0], json.dumps(results, indent=1) + "\n")
    write_text_atomically(paths[1], markdown(results))
    write_atomically(paths[2], lambda tmp: chart(results, tmp))
    return paths


def markdown(results: dict[str, Any]) -> str:
    """The tables of a run, with the machine they came from."""
    m = results["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB{gpu}, provider "
             f"{m['provider']}, decoding {results.get('decoding', 'on the CPU')}; "
             f"onnxruntime-gpu {m['versions'].get('onnxruntime-gpu', '-')}, "
             f"av {m['versions'].get('av', '-')}; {m['date']}. Bundle {results['bundle']} "
             f"(sample_fps {results['sample_fps']}), inputs {results['source_fps']} fps H.264 "
             f"of {results['plan']['video_seconds']} s; pipeline max_batch "
             f"{results['pipeline_settings']['max_batch']}, max_wait_ms "
             f"{results['pipeline_settings']['max_wait_ms']:g}; encoding: "
             f"{results['encoding']} (rule {results['keyframes']}).", ""]
    lines += ["| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {_num(t['measured'])} | {t['goal']} | {met} |")
    lines += ["", "Stage limits alone (best of the runs; CPU ms per frame over all threads):", "",
              "| stage | frames/s | CPU ms/frame |", "| --- | --- | --- |"]
    for size, entry in results["files"].items():
        for key, label in (("decode", "decode"), ("decode_convert_all", "decode + convert all"),
                           ("decode_convert_sampled", "decode all + convert sampled")):
            rate = entry["decode"][key]
            lines.append(f"| {size} {label} | {_num(rate['per_second'])} | "
                         f"{rate['cpu_ms']:.2f} |")
    for batch, rate in results["encoder"].items():
        lines.append(f"| encoder, batch {batch} | {_num(rate['per_second'])} | "
                     f"{rate['cpu_ms']:.2f} |")
    core = results["core"]
    for suffix, how in (("", results["encoding"]), (EVERY, "every frame")):
        for key, label in (("one_stream", "1 stream"),
                           ("many_streams", f"{core['batch']} streams")):
            if key + suffix in core:
                rate = core[key + suffix]
                lines.append(f"| whole core ({how} encoded), batch {core['batch']}, {label} | "
                             f"{_num(rate['per_second'])} | {rate['cpu_ms']:.2f} |")
    lines += ["", "The pipeline on files (source frames/s; the limit is min(decode, encoder) for "
              "the same frames; the CPU bound is the cores divided by the CPU time per frame of "
              "all stages together):", "",
              "| input, mode | pipeline | encoder calls / caption | limit | pipeline / limit | "
              "CPU bound | pipeline / CPU bound | pipeline / decode only | realtime factor | "
              "CPU |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size, entry in [*results["files"].items(), ("still scene", results["still"])]:
        for mode in ("every_frame", "sampled", "sampled" + EVERY):
            if mode not in entry:
                continue
            r = entry[mode]
            label = mode.replace(EVERY, ", every frame encoded").replace("_", " ")
            lines.append(f"| {size}, {label} | {_num(r['source_fps'])} | "
                         f"{r['encoder_calls_per_frame']:.3f} | {_num(r.get('limit_fps'))} | "
                         f"{_num(r.get('ratio_to_limit'))} | {_num(r.get('cpu_bound_fps'))} | "
                         f"{_num(r.get('ratio_to_cpu_bound'))} | {r['ratio_to_decode']:.2f} | "
                         f"{r['realtime_factor']:.1f}x | {r['cpu_percent']}% |")
    lines += ["", "Naive baseline (PyAV + PIL + eager PyTorch, one frame at a time):", "",
              "| mode | naive frames/s | naive CPU ms/frame | pipeline frames/s | pipeline CPU "
              "ms/frame | pipeline / naive | weights |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    first = next(iter(results["files"]))
    for mode, base in results["baseline"].items():
        ours = results["files"][first][mode]
        lines.append(f"| {mode.replace('_', ' ')} | {_num(base['source_fps'])} | "
                     f"{base['cpu_ms_per_source_frame']:.2f} | {_num(ours['source_fps'])} | "
                     f"{ours['cpu_ms_per_source_frame']:.2f} | {base['pipeline_ratio']:.1f}x | "
                     f"{base['weights']} |")
    for suffix, how in (("", results["encoding"]), (EVERY, "every frame")):
        if "capacity" + suffix in results:
            lines += _live_tables(results["live" + suffix], results["capacity" + suffix], how)
    for size, capacity in results.get("capacity_by_size", {}).items():
        lines += _live_tables({}, capacity, f"{results['encoding']}, {size} cameras,")
    return "\n".join(lines)


def _live_tables(live: dict[str, Any], capacity: dict[str, Any], how: str) -> list[str]:
    lines = ["", f"Live 30 fps cameras, {how} encoded (decode to caption event; after a 2 s "
             f"warm-up; capacity counts near the answer: the median of its trials, by p99):", "",
             "| streams | trials sustained | captions | encoder calls / caption | dropped | "
             "p50 ms | p95 ms | p99 ms | p99 spread ms | max ms | CPU | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = {**live, **{k: v for k, v in capacity["runs"].items() if k not in live}}
    for streams, r in sorted(rows.items(), key=lambda kv: int(kv[0])):
        lat = r["latency_ms"]
        trials = (f"{r['sustained_trials']}/{len(r['trials'])}" if "trials" in r else "-")
        spread = "-".join(str(v) for v in r.get("p99_spread_ms", [])) or "-"
        lines.append(f"| {streams} | {trials} | {r['captioned']} | "
                     f"{r['encoder_calls_per_frame']:.3f} | {r['dropped']} | {lat['p50']} | "
                     f"{lat['p95']} | {lat['p99']} | {spread} | {lat['max']} | "
                     f"{r['cpu_percent']}% | {r['peak_rss_mb']} |")
    lines += ["", f"Stream capacity, {how} encoded: {capacity['streams']} streams"
              + (" (the search limit)" if capacity["limit_reached"] else "")
              + f" with < {capacity['criteria']['dropped_fraction_below']:.0%} dropped frames and "
              f"p99 < {capacity['criteria']['p99_latency_ms_below']:g} ms (the majority of "
              f"{capacity['criteria']['boundary_trials']} trials near the answer)."]
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    """Stage limits vs the pipeline (left) and the latency distribution of live streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results["files"]))
    entry = results["files"][first]
    fig, (bars, lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, values, colors = [], [], []
    for mode, title in (("every_frame", "every frame"), ("sampled", "sampled")):
        for label, value, color in (
                ("limit", entry[mode]["limit_fps"], "#9ecae1"),
                ("CPU bound", entry[mode]["cpu_bound_fps"], "#6baed6"),
                ("pipeline", entry[mode]["source_fps"], "#08519c"),
                ("naive", results["baseline"].get(mode, {}).get("source_fps", 0), "#fb6a4a")):
            labels.append(f"{title}\n{label}")
            values.append(value)
            colors.append(color)
    if "sampled" + EVERY in entry:
        labels.append("sampled\nall encoded")
        values.append(entry["sampled" + EVERY]["source_fps"])
        colors.append("#74c476")
    bars.bar(range(len(values)), values, color=colors)
    bars.set_xticks(range(len(values)), labels, fontsize=7)
    bars.set_ylabel("source frames/s")
    bars.set_title(f"{first} file: limits, pipeline, naive baseline")
    for x, v in enumerate(values):
        bars.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    for streams, r in sorted(results["live"].items(), key=lambda kv: int(kv[0])):
        samples = sorted(r["latency_samples"])
        if samples:
            fraction = [(i + 1) / len(samples) for i in range(len(samples))]
            lat.plot(samples, fraction, label=f"{streams} stream(s)")
    lat.set_xlabel("latency, decode to caption event (ms)")
    lat.set_ylabel("fraction of frames")
    lat.set_title("live 30 fps cameras")
    lat.legend()
    m = results["machine"]
    fig.suptitle(f"{m['cpu']}, {m['cores']} cores, {m['provider']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    return "-" if value is None else str(value)
