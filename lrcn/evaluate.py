"""Evaluate a checkpoint's per-frame captions on one or more data splits.

Example:
    python -m lrcn.evaluate --checkpoint runs/shapes/best.pt --data data/shapes/test \
        --novel data/shapes/novel --out runs/shapes/eval.json
    python -m lrcn.evaluate --bundle models/shapes --data data/shapes/test --record

With --bundle the captions come from the exported bundle through the runtime's torch-free
ONNX core (stream/model/captioning.py), every video stepped as a stream from its first frame.

For every split and decoding (greedy, and beam search of each --beam width) it reports:
  * frame exact match: the emitted caption equals a reference of the segment covering the frame
    (frames outside every segment are not counted); on a split of still images (--stills,
    --stills-variant) this is the still-image exact match against the appearance caption;
  * frame target match: the caption equals what the frame may say, the segment's appearance
    ("a red circle") until its motion is evident, then its sentence (what training teaches);
  * truthful frames: the caption is the segment's sentence or its appearance, whichever;
  * wrong-caption runs per event: runs of frames whose caption is neither;
  * caption changes per event: frames whose caption differs from the previous frame's (2 per
    event at best: the appearance, then the sentence);
  * event exact match and COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) of the caption
    emitted at each segment's last sampled frame, against that segment's references;
  * caption lag: sampled frames from a segment's start until the emitted caption is correct and
    stays so (median and 90th percentile; a segment that never settles counts as infinite);
  * settled captions, for each --settle value (what the runtime shows: stream.settle): subtitle
    cues per event, spurious cues per event (cues true of no segment they overlap), the lag
    from a segment's start until the shown caption is its sentence, and what settling adds to
    the per-frame captions' own lag.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lrcn.checkpoint import CheckpointError, load_checkpoint
from lrcn.data import (
    DataError,
    Dataset,
    VideoItem,
    frame_references,
    frame_truthful_targets,
    load_dataset,
)
from lrcn.features import encode_videos
from lrcn.metrics import (
    MetricsError,
    caption_changes,
    caption_lag,
    coco_caption_scores,
    cue_runs,
    first_match,
    frame_exact_match,
    lag_summary,
    normalize_caption,
    spurious_cues,
    wrong_runs,
)
from lrcn.predict import predict, video_key_frames
from stream.cli.arguments import Parser
from stream.errors import StreamError
from stream.events import CaptionEvent
from stream.files import write_text_atomically
from stream.media.frames import read_sampled_frames
from stream.model.bundle import BundleError, open_bundle, record_evaluation
from stream.model.captioning import CaptionCore, caption_sequences
from stream.model.keyframes import EVERY_FRAME
from stream.model.sessions import DEVICES, PRECISION_HELP, PRECISIONS, SessionSettings
from stream.settle import DEFAULT_SETTLE, Settler

log = logging.getLogger(__name__)

SETTLE_CURVE = (1, 2, 3, 4, 5)  # the settle values scored by default


def settled_captions(captions: Sequence[str], settle: int) -> list[str]:
    """The caption the runtime shows at each frame of one video's per-frame ``captions`` (the
    runtime's own rule, :mod:`stream.settle`, the video a stream from its first frame)."""
    settler = Settler("video", settle)
    shown = []
    for index, caption in enumerate(captions):
        frame = CaptionEvent(stream="video", index=index, pts=float(index), decoded_at=0.0,
                             emitted_at=0.0, caption=caption, logprob=0.0, latency_ms=0.0,
                             changed=True, reset=index == 0)
        shown += [e.shown or "" for e in settler.push(frame) if isinstance(e, CaptionEvent)]
    return shown


def score_settled(items: Sequence[VideoItem], times: Sequence[Sequence[float] | np.ndarray],
                  captions: Sequence[Sequence[str]], settle: int) -> dict[str, Any]:
    """What a person is shown with ``settle`` (subtitle cues of the settled captions): cues and
    spurious cues (true of no segment they overlap) per event, and the lag from a segment's
    start until the shown caption is its sentence, with what settling adds to the per-frame
    captions' own lag."""
    cues = spurious = events = 0
    lags: list[int | None] = []
    added: list[int | None] = []
    for item, t, caps in zip(items, times, captions, strict=True):
        shown = settled_captions(caps, settle)
        segments = []
        for seg in item.segments:
            frames = [i for i, x in enumerate(t) if seg.covers(float(x))]
            if not frames:
                continue
            first, end = frames[0], frames[-1] + 1
            segments.append((first, end, seg.truthful))
            lag = first_match(shown, first, end, seg.sentences)
            lags.append(lag)
            own = first_match(caps, first, end, seg.sentences)
            if lag is not None and own is not None:
                added.append(lag - own)
        video_cues = cue_runs(shown)
        cues += len(video_cues)
        spurious += spurious_cues(video_cues, segments)
        events += len(segments)
    return {"settle": settle,
            "cues_per_event": cues / events if events else None,
            "spurious_cues_per_event": spurious / events if events else None,
            "lag_frames": lag_summary(lags), "added_lag_frames": lag_summary(added)}


def score_split(
    items: Sequence[VideoItem],
    times: Sequence[Sequence[float] | np.ndarray],
    captions: Sequence[Sequence[str]],
    meteor: bool = True,
    settles: Sequence[int] = (DEFAULT_SETTLE,),
) -> dict[str, Any]:
    """All metrics for one split, given each video's sampled-frame times and emitted captions;
    ``settled`` holds what is shown at each of ``settles``."""
    correct = counted = on_target = truthful = runs = changes = 0
    event_hits, lags = 0, []
    candidates: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    for item, t, caps in zip(items, times, captions, strict=True):
        c, n = frame_exact_match(caps, frame_references(item, t))
        correct, counted = correct + c, counted + n
        on_target += frame_exact_match(caps, frame_truthful_targets(item, t))[0]
        changed = caption_changes(caps)
        for k, seg in enumerate(item.segments):
            frames = [i for i, x in enumerate(t) if seg.covers(float(x))]
            if not frames:
                continue  # a segment shorter than the sampling interval
            first, last = frames[0], frames[-1]
            truthful += frame_exact_match(caps[first : last + 1], [seg.truthful] * len(frames))[0]
            runs += wrong_runs(caps, first, last + 1, seg.truthful)
            changes += sum(changed[first : last + 1])
            key = f"{item.video_id}#{k}"
            candidates[key] = caps[last]
            references[key] = list(seg.sentences)
            refs = {normalize_caption(s) for s in seg.sentences}
            event_hits += normalize_caption(caps[last]) in refs
            lags.append(caption_lag(caps, first, last + 1, seg.sentences))
    events = len(candidates)
    result: dict[str, Any] = {
        "videos": len(items),
        "frames": counted,
        "frame_exact_match": correct / counted if counted else None,
        "frame_target_match": on_target / counted if counted else None,
        "truthful_frames": truthful / counted if counted else None,
        "events": events,
        "event_exact_match": event_hits / events if events else None,
        "wrong_caption_runs_per_event": runs / events if events else None,
        "caption_changes_per_event": changes / events if events else None,
        "caption_lag_frames": lag_summary(lags),
    }
    result["settled"] = {str(n): score_settled(items, times, captions, n) for n in settles}
    if candidates:
        result["coco"] = coco_caption_scores(candidates, references, meteor=meteor)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = Parser(prog="python -m lrcn.evaluate", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="a .pt file from lrcn.train")
    model.add_argument("--bundle", type=Path,
                       help="an exported bundle directory, run through the ONNX core")
    p.add_argument("--data", type=Path, required=True, help="test split: folder or annotation JSON")
    p.add_argument("--novel", type=Path, help="a 'novel combinations' split, scored separately")
    p.add_argument("--stills", type=Path,
                   help="a split of still images (e.g. COCO layout), scored separately: its "
                        "frame exact match is the still-image exact match")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                   type=_variant,
                   help="another split scored under NAME, e.g. 60fps=data/shapes/test-60fps "
                        "(repeatable)")
    p.add_argument("--stills-variant", action="append", default=[], metavar="NAME=PATH",
                   type=_variant,
                   help="another split of still images scored under NAME like --stills, e.g. "
                        "independent-stills=data/shapes/independent-stills (repeatable); it "
                        "must be in the COCO captions layout")
    p.add_argument("--beam", type=int, nargs="*", default=[3],
                   help="beam widths to evaluate besides greedy (default: 3; none: greedy only)")
    p.add_argument("--sample-fps", type=float,
                   help="sampling rate (default: the one the checkpoint was trained at)")
    p.add_argument("--out", type=Path, help="write the results JSON here (default: print only)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"),
                   help="encoded-frame cache shared with training (default: %(default)s)")
    p.add_argument("--engine", choices=["onnx", "torch"], default="onnx",
                   help="how encoder features are computed")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="execution device for --bundle (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="with --bundle: " + PRECISION_HELP)
    p.add_argument("--record", action="store_true",
                   help="with --bundle: store the results in the bundle's bundle.json (under "
                        "onnx_core, or onnx_core_encode_every_frame; with _int8 added where "
                        "the int8 encoder ran)")
    p.add_argument("--encode-every-frame", action="store_true",
                   help="run the CNN on every frame instead of holding its features between "
                        "the model's key frames (for comparison)")
    p.add_argument("--settle", type=int, nargs="+", default=list(SETTLE_CURVE), metavar="N",
                   help="score the captions shown with each of these settle values (the "
                        "runtime's --settle; default: %(default)s)")
    p.add_argument("--no-meteor", action="store_true",
                   help="skip METEOR (its Java process takes ~10 s to start)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation that ``args`` describe and return the results dictionary."""
    if args.bundle is not None:
        return _evaluate_bundle(args)
    model, vocab, payload = load_checkpoint(args.checkpoint)
    sample_fps = args.sample_fps or payload["provenance"]["sample_fps"]
    results = {"checkpoint": str(args.checkpoint), "sample_fps": sample_fps,
               "encoding": _encoding(args), "splits": {}}
    for name, path in _splits(args).items():
        data = _load_split(args, name, path)
        videos = encode_videos(data.items, model.encoder, sample_fps, args.cache_dir, args.engine,
                               not args.no_progress)
        rule = EVERY_FRAME if args.encode_every_frame else model.config.keyframes
        encoded = sum(int(video_key_frames(rule, v, sample_fps).sum()) for v in videos)
        frames = sum(len(v.times) for v in videos)
        split: dict[str, Any] = {"data": str(path), "frames_encoded": encoded,
                                 "encoder_calls_per_frame": round(encoded / max(frames, 1), 4)}
        for beam in _beams(args):
            captions = predict(model, videos, vocab, sample_fps, beam=beam, rule=rule)
            split[_label(beam)] = score_split(data.items, [v.times for v in videos], captions,
                                              meteor=not args.no_meteor, settles=args.settle)
            log.info("%s %s: %s", name, _label(beam), _headline(split[_label(beam)]))
        results["splits"][name] = split
    return results


def _encoding(args: argparse.Namespace) -> str:
    return "every frame" if args.encode_every_frame else "key frames"


def _variant(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name.strip(), Path(path.strip())


def _splits(args: argparse.Namespace) -> dict[str, Path]:
    splits = {"test": args.data}
    for name, path in ([("novel", args.novel), ("stills", args.stills)] + args.variant
                       + args.stills_variant):
        if path is None:
            continue
        if name in splits:
            raise DataError(f"split name {name!r} (--variant, --stills-variant) is taken by "
                            "another split; choose another")
        splits[name] = path
    return splits


def _load_split(args: argparse.Namespace, name: str, path: Path) -> Dataset:
    """Split ``name`` read from ``path``; a --stills-variant must hold still images."""
    data = load_dataset(path)
    if name in dict(args.stills_variant) and data.layout != "coco":
        raise DataError(f"{data.annotation}: --stills-variant {name} expects still images in "
                        f"the COCO captions layout, found the {data.layout} layout")
    return data


def _beams(args: argparse.Namespace) -> list[int]:
    return [1] + [b for b in args.beam if b > 1]


def _label(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam{beam}"


def _evaluate_bundle(args: argparse.Namespace) -> dict[str, Any]:
    loaded = open_bundle(args.bundle, SessionSettings(device=args.device,
                                                      precision=args.precision))
    bundle = loaded.bundle
    if args.sample_fps and args.sample_fps != bundle.sample_fps:
        raise BundleError(f"{args.bundle}: --sample-fps {args.sample_fps:g} differs from the "
                          f"bundle's {bundle.sample_fps:g} (its key frames are on that grid)")
    sample_fps = bundle.sample_fps
    size = (bundle.input_size, bundle.input_size)
    results: dict[str, Any] = {"bundle": str(args.bundle), "provider": loaded.providers[0],
                               "encoder_precision": loaded.precision,
                               "sample_fps": sample_fps, "encoding": _encoding(args),
                               "splits": {}}
    cores = {beam: CaptionCore(loaded, beam=beam, encode_every_frame=args.encode_every_frame)
             for beam in _beams(args)}
    for name, path in _splits(args).items():
        items = _load_split(args, name, path).items
        times: list[np.ndarray] = []
        captions: dict[int, list[list[str]]] = {beam: [] for beam in cores}
        encoded = 0
        bar = tqdm(total=len(items), desc=name, unit="video", dynamic_ncols=True,
                   disable=args.no_progress)
        for start in range(0, len(items), _STREAMS):
            # Each group of videos is decoded once and captioned by every decoding.
            decoded = [read_sampled_frames(it.path, sample_fps, size)
                       for it in items[start : start + _STREAMS]]
            times += [t for _, t in decoded]
            for beam, core in cores.items():
                for caps in caption_sequences(core, [f for f, _ in decoded],
                                              times=[t for _, t in decoded], streams=_STREAMS):
                    captions[beam].append([c.text for c in caps])
                    encoded += sum(c.encoded for c in caps) if beam == 1 else 0
            bar.update(len(decoded))
        bar.close()
        frames = sum(len(t) for t in times)
        split: dict[str, Any] = {"data": str(path), "frames_encoded": encoded,
                                 "encoder_calls_per_frame": round(encoded / max(frames, 1), 4)}
        for beam in cores:
            split[_label(beam)] = score_split(items, times, captions[beam],
                                              meteor=not args.no_meteor, settles=args.settle)
            log.info("%s %s: %s", name, _label(beam), _headline(split[_label(beam)]))
        results["splits"][name] = split
    if args.record:
        key = "onnx_core" + ("_encode_every_frame" if args.encode_every_frame else "")
        record_evaluation(args.bundle, key + ("_int8" if loaded.precision == "int8" else ""),
                          results)
    return results


_STREAMS = 16  # videos captioned side by side as concurrent streams


def _headline(scores: dict[str, Any]) -> str:
    lag = scores["caption_lag_frames"]
    coco = scores.get("coco", {})
    settled = scores["settled"].get(str(DEFAULT_SETTLE))
    shown = "" if settled is None else (
        f"settle {DEFAULT_SETTLE}: cues/event {settled['cues_per_event']:.2f}, spurious/event "
        f"{settled['spurious_cues_per_event']:.3f}, added lag median "
        f"{settled['added_lag_frames']['median']}, ")
    return (f"frame EM {scores['frame_exact_match']:.4f}, truthful "
            f"{scores['truthful_frames']:.4f}, event EM {scores['event_exact_match']:.4f}, "
            f"wrong runs/event {scores['wrong_caption_runs_per_event']:.3f}, changes/event "
            f"{scores['caption_changes_per_event']:.2f}, lag median {lag['median']} p90 "
            f"{lag['p90']}, " + shown + ", ".join(f"{k} {v:.4f}" for k, v in coco.items()))


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate; prints the results JSON and returns a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        results = evaluate(args)
    except (CheckpointError, DataError, MetricsError, StreamError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(results, indent=2, allow_nan=False)
    if args.out:
        write_text_atomically(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
