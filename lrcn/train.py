"""Train an LRCN captioner.

Example:
    python -m lrcn.train --config configs/shapes.json --train data/shapes/train \
        --val data/shapes/val --out runs/shapes

Frozen-encoder features are cached on disk (``--cache-dir``); training then runs the memory and
captioner over whole videos with truncated back-propagation through time, carrying the recurrent
state between chunks. ``best.pt`` is the checkpoint with the best validation per-frame exact match;
``last.pt`` is written after every epoch and is what ``--resume`` continues from.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lrcn.backbones import BackboneError
from lrcn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lrcn.data import (
    DataError,
    Dataset,
    VideoItem,
    frame_targets,
    frame_truthful_targets,
    load_dataset,
)
from lrcn.features import (
    DecodedVideo,
    EncodedVideo,
    decode_videos,
    encode_decoded,
    encode_videos,
)
from lrcn.model import LRCN, LRCNConfig, caption_targets, option
from lrcn.predict import frame_accuracy
from lrcn.vocab import PAD_ID, Vocabulary
from stream.cli.arguments import Parser
from stream.files import write_text_atomically
from stream.model.keyframes import (
    KeyFrameRule,
    held_index,
    key_frames,
    sample_slot,
    signature,
    thumbnails,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the model's own settings live in LRCNConfig)."""

    sample_fps: float = option(10.0, "frames sampled per second of video, by presentation time")
    epochs: int = option(30, "cosine schedule length")
    minutes: float = option(30.0, "stop training after this many minutes (feature caching "
                                  "excluded; counted across --resume); 0 for no time limit, so "
                                  "that only --epochs bounds training")
    batch_size: int = option(16, "videos per batch")
    lr: float = option(2e-3, "peak learning rate (AdamW, cosine schedule)")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    tbptt: int = option(40, "frames per truncated back-propagation chunk")
    clip: float = option(1.0, "gradient norm clip")
    random_start: float = option(0.5, "probability that a training sequence starts mid-video")
    appearance_dropout: float = option(0.0, "probability that a training sequence is seen "
                                            "without its appearance features (zeros), so that "
                                            "the memory also learns to caption from the "
                                            "thumbnail stream")
    thumb_jitter: float = option(0.0, "per training sequence, scale each thumbnail colour "
                                      "channel by 1 +- this and shift it by +- a third of it "
                                      "(shades of a colour word the renderer never drew)")
    seed: int = option(0, "random seed")


@dataclass
class _Sequence:
    """One video ready for training: encoder inputs or outputs, and per-frame caption targets.

    ``inputs`` is (appearance (T, F), thumbs (T, 3, m, m)) from the cache with a frozen encoder;
    when fine-tuning it is (frames (T, S, S, 3) uint8, thumbs) and the encoder runs in the
    training graph. ``signatures`` and ``slots`` place the frames in the key-frame schedule.
    """

    item: VideoItem
    inputs: tuple[torch.Tensor, ...]
    signatures: np.ndarray  # (T, 3, cells, cells)
    slots: np.ndarray  # (T,) sample slots
    times: np.ndarray  # (T,) seconds
    segment: np.ndarray  # (T,) index of the frame's segment, -1 for no target
    references: list[list[list[int]]]  # per segment k: [2k] its sentences, [2k + 1] appearance

    def targets(self, start: int) -> np.ndarray:
        """Per frame from ``start`` on, the index into ``references`` of what a stream that
        starts there must say (-1: no target): a segment's appearance until its motion is
        evident to that stream, then its sentences."""
        item, times = self.item, self.times[start:]
        out = np.full(len(times), -1, np.int64)
        truthful = frame_truthful_targets(item, times)
        for i, (k, allowed) in enumerate(zip(self.segment[start:], truthful, strict=True)):
            if k >= 0:
                out[i] = 2 * k + (allowed != item.segments[k].sentences)
        return out

    def __len__(self) -> int:
        return len(self.times)


def _sequences(
    videos: Sequence[EncodedVideo | DecodedVideo], vocab: Vocabulary, config: LRCNConfig,
    sample_fps: float,
) -> list[_Sequence]:
    out = []
    rule = config.keyframes
    for video in videos:
        if isinstance(video, DecodedVideo):
            thumbs = thumbnails(video.frames, config.motion_pool)
            inputs = (torch.from_numpy(video.frames), torch.from_numpy(thumbs))
        else:
            thumbs = video.thumbs
            inputs = (torch.from_numpy(video.appearance), torch.from_numpy(thumbs))
        slots = np.array([sample_slot(t, sample_fps) for t in video.times], np.int64)
        segments = list(video.item.segments)
        segment = np.array([segments.index(seg) if seg is not None else -1
                            for seg in frame_targets(video.item, video.times)], np.int64)
        refs = [[vocab.encode(s, config.max_caption_len) for s in sentences]
                for seg in segments for sentences in (seg.sentences,
                                                      seg.appearance or seg.sentences)]
        out.append(_Sequence(video.item, inputs, signature(rule, thumbs), slots,
                             np.asarray(video.times), segment, refs))
    return out


def _batch(
    seqs: list[_Sequence], starts: list[int], rule: KeyFrameRule
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest member: inputs (B, T, ...) each, cont (B, T), targets (B, T).

    Sequence b starts at its frame ``starts[b]`` (a stream can begin mid-video), and its key-frame
    schedule starts there too: the first input (appearance, or the frames it is computed from)
    is held between key frames exactly as the runtime holds it.
    """
    lengths = [len(s) - st for s, st in zip(seqs, starts, strict=True)]
    B, T = len(seqs), max(lengths)
    inputs = [torch.zeros(B, T, *x.shape[1:], dtype=x.dtype) for x in seqs[0].inputs]
    cont = torch.ones(B, T)
    cont[:, 0] = 0.0
    targets = torch.full((B, T), -1, dtype=torch.long)
    for b, (s, st, n) in enumerate(zip(seqs, starts, lengths, strict=True)):
        keys = key_frames(rule, s.signatures[st:], s.slots[st:])
        held = torch.from_numpy(st + held_index(keys))  # (n,) frame of the features used
        inputs[0][b, :n] = s.inputs[0][held]
        for padded, x in zip(inputs[1:], s.inputs[1:], strict=True):
            padded[b, :n] = x[st:]
        targets[b, :n] = torch.from_numpy(s.targets(st))
    return inputs, cont, targets


def _encoded(model: LRCN, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(appearance (B, t, F), thumbs (B, t, 3, m, m)) of a chunk of cached or raw inputs."""
    first, thumbs = inputs
    if first.dtype != torch.uint8:
        return first, thumbs
    # (B, t, S, S, 3) held frames: fine-tuning runs the encoder inside the graph
    appearance = model.encoder(first.flatten(0, 1))  # (B * t, F)
    return appearance.view(*first.shape[:2], -1), thumbs


def _perturb(
    thumbs: torch.Tensor, cfg: TrainConfig, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's training perturbations, drawn per sequence: thumbnails (B, T, 3, m, m) with
    their colours jittered (``thumb_jitter``), and a (B, 1, 1) mask that is 0 for the sequences
    seen without appearance features (``appearance_dropout``)."""
    batch = thumbs.shape[0]
    keep = torch.ones(batch)
    if cfg.appearance_dropout > 0:
        keep = torch.tensor([float(rng.random() >= cfg.appearance_dropout)
                             for _ in range(batch)])
    if cfg.thumb_jitter > 0:
        amount = cfg.thumb_jitter
        gain = torch.tensor([[1 + rng.uniform(-amount, amount) for _ in range(3)]
                             for _ in range(batch)])
        shift = torch.tensor([[rng.uniform(-amount, amount) / 3 for _ in range(3)]
                              for _ in range(batch)])
        thumbs = (thumbs * gain.view(batch, 1, 3, 1, 1)
                  + shift.view(batch, 1, 3, 1, 1)).clamp(0.0, 1.0)
    return thumbs, keep.view(batch, 1, 1)


def train_epoch(
    model: LRCN,
    seqs: list[_Sequence],
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    rng: random.Random,
    deadline: float,
    progress: bool = True,
) -> float:
    """One pass over ``seqs`` in shuffled batches; returns the mean token cross-entropy."""
    model.train()
    starts = [rng.randrange(len(s) // 2 + 1) if rng.random() < cfg.random_start else 0
              for s in seqs]
    # Batch sequences of similar length together (little padding), in random batch order.
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]) - starts[i], rng.random()))
    # One-frame items (still images) go batch_size x tbptt to a batch: each optimizer step then
    # sees as many frames as a chunk of a video batch, so stills weigh per frame as video does.
    singles = [i for i in order if len(seqs[i]) - starts[i] == 1]
    longer = [i for i in order if len(seqs[i]) - starts[i] > 1]
    batches = [longer[i : i + cfg.batch_size] for i in range(0, len(longer), cfg.batch_size)]
    wide = cfg.batch_size * cfg.tbptt
    batches += [singles[i : i + wide] for i in range(0, len(singles), wide)]
    rng.shuffle(batches)
    total, count = 0.0, 0
    bar = tqdm(total=len(batches), desc="train", unit="batch", disable=not progress, leave=False,
               dynamic_ncols=True)
    for indices in batches:
        if time.monotonic() > deadline:
            break
        batch = [seqs[i] for i in indices]
        inputs, cont, targets = _batch(batch, [starts[i] for i in indices],
                                       model.config.keyframes)
        inputs[1], keep = _perturb(inputs[1], cfg, rng)
        state = model.memory.init_state(len(batch))
        for t0 in range(0, cont.shape[1], cfg.tbptt):
            sl = slice(t0, t0 + cfg.tbptt)
            appearance, thumbs = _encoded(model, [x[:, sl] for x in inputs])
            appearance = appearance * keep
            memory, state = model.memory(appearance, thumbs, cont[:, sl], state)
            # Truncated BPTT: the state carries on, its gradient history does not.
            state = type(state)(*(s.detach() for s in state))
            chunk_targets = targets[:, sl]
            b_idx, t_idx = (chunk_targets >= 0).nonzero(as_tuple=True)
            if len(b_idx) == 0:
                continue
            captions = []
            for b, t in zip(b_idx.tolist(), t_idx.tolist(), strict=True):
                refs = batch[b].references[int(chunk_targets[b, t])]
                captions.append(refs[rng.randrange(len(refs))])
            tokens_in, tokens_out = caption_targets(captions, model.config.max_caption_len)
            logits = model.captioner(memory[b_idx, t_idx], tokens_in)  # (N, L, V)
            loss = F.cross_entropy(logits.flatten(0, 1), tokens_out.flatten(), ignore_index=PAD_ID)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            total += loss.item() * len(b_idx)
            count += len(b_idx)
        bar.update(1)
        bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
    bar.close()
    return total / max(count, 1)


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line interface (every option is also a --config JSON key)."""
    p = Parser(
        prog="python -m lrcn.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("data and output")
    io.add_argument("--config", type=Path, help="JSON file of option defaults "
                    "(keys are option names with underscores); command-line options override it")
    io.add_argument("--train", type=Path, nargs="+", help="training data: one or more folders "
                    "or annotation JSONs (ActivityNet Captions, MSR-VTT or COCO captions layout, "
                    "e.g. videos and still images)")
    io.add_argument("--val", type=Path, help="validation data (same layouts); picks best.pt")
    io.add_argument("--out", type=Path, help="run folder for checkpoints and logs")
    io.add_argument("--cache-dir", type=Path, default=Path("cache/features"),
                    help="where encoded frames are cached (default: %(default)s)")
    io.add_argument("--engine", choices=["onnx", "torch"], default="onnx",
                    help="how frozen features are computed: ONNX Runtime or eager PyTorch")
    io.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    io.add_argument("--no-progress", action="store_true", help="no progress bars")
    m = p.add_argument_group("model")
    m.add_argument("--weights", choices=["imagenet", "none"], default="imagenet",
                   help="ImageNet weights (installed offline) or random init (train from scratch)")
    add_config_options(m, LRCNConfig, skip=frozenset({"vocab_size", "pretrained"}))
    m.add_argument("--min-word-count", type=int, default=1,
                   help="rarer training words become <unk>")
    add_config_options(p.add_argument_group("optimisation"), TrainConfig)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse options, taking defaults from ``--config`` first."""
    parser = get_args_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config is not None:
        try:
            defaults = json.loads(pre.config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"{pre.config}: cannot read config ({error})")
        known = set(vars(pre))  # every option's destination, with its default
        unknown = sorted(set(defaults) - known)
        if unknown:
            parser.error(f"{pre.config}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    for name in ("train", "out"):
        if getattr(args, name) is None:
            parser.error(f"--{name} is required")
    if args.minutes < 0:
        parser.error(f"--minutes must be 0 (no limit) or more, not {args.minutes:g}")
    return args


class _Options(Protocol):
    """A parser or an argument group: whatever takes options."""

    def add_argument(self, *names: str, **settings: Any) -> Any: ...


def add_config_options(group: _Options, cls: type, skip: frozenset[str] = frozenset()) -> None:
    """One option per field of the config dataclass ``cls`` (but ``skip``): ``--field-name``,
    typed by the field, with the field's default, help and choices (:func:`lrcn.model.option`);
    a bool gets ``--field``/``--no-field``."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        settings = dict(f.metadata)
        settings["help"] = f"{settings.get('help', '')} (default: %(default)s)"
        if f.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                               **settings)
        else:
            group.add_argument(flag, type=_TYPES[str(getattr(f.type, "__name__", f.type))],
                               default=default, **settings)


_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


def _config(cls: type[Any], args: argparse.Namespace, **given: Any) -> Any:
    """An instance of the config dataclass ``cls`` from the options of its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.name not in given},
               **given)


def _model_config(args: argparse.Namespace, vocab_size: int) -> LRCNConfig:
    return _config(LRCNConfig, args, vocab_size=vocab_size,
                   pretrained=args.weights == "imagenet")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return _config(TrainConfig, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Train; returns a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return _run(args)
    except (DataError, BackboneError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cfg = _train_config(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    rng = random.Random(cfg.seed)

    train_data = _load_all(args.train)
    val_data = load_dataset(args.val) if args.val else None
    resume = out / "last.pt"
    state: dict[str, Any] = {}
    if args.resume:
        model, vocab, state = load_checkpoint(resume)
        log.info("resuming from %s (epoch %d)", resume, state["epoch"])
    else:
        vocab = Vocabulary.build(train_data.sentences(), min_count=args.min_word_count)
        model = LRCN(_model_config(args, len(vocab)))
    mcfg = model.config
    log.info("vocabulary: %d words; appearance features: %d", len(vocab), mcfg.appearance_dim)
    progress = not args.no_progress
    val_items = val_data.items if val_data else ()
    train_videos: Sequence[EncodedVideo | DecodedVideo]
    if mcfg.finetune:  # the encoder changes as it trains: nothing to cache
        train_videos = decode_videos(train_data.items, cfg.sample_fps, mcfg.input_size, progress)
        val_frames = decode_videos(val_items, cfg.sample_fps, mcfg.input_size, progress)
    else:
        train_videos = encode_videos(train_data.items, model.encoder, cfg.sample_fps,
                                     args.cache_dir, args.engine, progress)
        val_encoded = encode_videos(val_items, model.encoder, cfg.sample_fps, args.cache_dir,
                                    args.engine, progress)
    seqs = _sequences(train_videos, vocab, mcfg, cfg.sample_fps)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(e, cfg.epochs)
                                                               / cfg.epochs)))
    history: list[dict[str, Any]] = []
    start_epoch, best, elapsed = 0, -1.0, 0.0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, best, elapsed = state["epoch"] + 1, state["best"], state["elapsed"]
        history = json.loads(state["history"])
    provenance = {"train": [str(path) for path in args.train], "val": str(args.val),
                  "seed": cfg.seed, "sample_fps": cfg.sample_fps, "args": _jsonable(vars(args))}
    write_text_atomically(out / "config.json", json.dumps(provenance["args"], indent=2) + "\n")

    # No time limit makes a run the same on every machine: tests bound training by epochs only.
    budget = cfg.minutes * 60 - elapsed if cfg.minutes > 0 else math.inf
    began = time.monotonic()
    deadline = began + budget
    for epoch in range(start_epoch, cfg.epochs):
        if time.monotonic() >= deadline:
            log.info("time budget of %.1f min used up", cfg.minutes)
            break
        loss = train_epoch(model, seqs, optimizer, cfg, rng, deadline, progress)
        schedule.step()
        if mcfg.finetune:
            model.eval()
            val_encoded = [encode_decoded(model.encoder, v) for v in val_frames]
        accuracy = (frame_accuracy(model, val_encoded, vocab, cfg.sample_fps) if val_items
                    else float("nan"))
        spent = elapsed + time.monotonic() - began
        row = {"epoch": epoch, "minutes": round(spent / 60, 3), "train_loss": round(loss, 5),
               "val_frame_acc": round(accuracy, 5), "lr": optimizer.param_groups[0]["lr"]}
        history.append(row)
        log.info("epoch %d: loss %.4f, val per-frame exact match %.4f (%.1f min)", epoch, loss,
                 accuracy, spent / 60)
        improved = not val_items or accuracy > best
        best = max(best, accuracy) if val_items else accuracy
        meta = {"provenance": provenance, "epoch": epoch, "elapsed": spent,
                "metrics": {"val_frame_acc": accuracy, "train_loss": loss}}
        if improved:
            save_checkpoint(out / "best.pt", model, vocab, **meta)
        save_checkpoint(resume, model, vocab, optimizer=optimizer.state_dict(),
                        schedule=schedule.state_dict(), best=best, history=json.dumps(history),
                        **meta)
        _write_logs(out, history)
    log.info("best validation per-frame exact match: %.4f -> %s", best, out / "best.pt")
    return 0


def _load_all(paths: Sequence[Path]) -> Dataset:
    """Several data sets as one (item ids must not repeat across them)."""
    sets = [load_dataset(path) for path in paths]
    items = [item for data in sets for item in data.items]
    ids: dict[str, Path] = {}
    for data in sets:
        for item in data.items:
            if item.video_id in ids:
                raise DataError(f"{data.annotation}: item {item.video_id} is also in "
                                f"{ids[item.video_id]}")
            ids[item.video_id] = data.annotation
    return Dataset(sets[0].annotation, "+".join(d.layout for d in sets), tuple(items))


def _write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    write_text_atomically(out / "log.json", json.dumps(history, indent=2) + "\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomically(out / "log.csv", table.getvalue())


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path)
            else [str(p) for p in v] if isinstance(v, list) and v and isinstance(v[0], Path)
            else v for k, v in values.items()}


if __name__ == "__main__":
    sys.exit(main())
