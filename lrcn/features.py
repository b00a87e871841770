"""Encoded frames of a data set, computed once and cached on disk.

With a frozen backbone the encoder's output (pooled appearance) and the motion stream's thumbnails
depend only on the video, the sample rate and the encoder, so epochs read them from
``<cache>/<key>.npz`` instead of re-running the CNN. The cache holds every frame's appearance:
training holds it between key frames itself, as the runtime does. The key hashes the video's
path, size and mtime, ``sample_fps``, the encoder
configuration and the backbone's weights.

By default the encoder runs through ONNX Runtime (several times faster than eager PyTorch on a
CPU, and the same graph kind the streaming runtime runs); ``engine="torch"`` runs it eagerly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lrcn.data import VideoItem
from lrcn.model import FrameEncoder
from lrcn.onnx_export import export_onnx
from stream.files import write_atomically
from stream.media.frames import read_sampled_frames
from stream.model.keyframes import thumbnails
from stream.model.sessions import SessionSettings, create_session

_CACHE_VERSION = 2  # 2: thumbnails from stream.model.keyframes.thumbnails
_BATCH = 32


@dataclass(frozen=True)
class EncodedVideo:
    """Encoder outputs of one video's sampled frames.

    appearance (T, F) float32; thumbs (T, 3, m, m) float32; times (T,) seconds.
    """

    item: VideoItem
    appearance: np.ndarray
    thumbs: np.ndarray
    times: np.ndarray


@dataclass(frozen=True)
class DecodedVideo:
    """Sampled RGB frames of one video, for end-to-end training: frames (T, S, S, 3) uint8."""

    item: VideoItem
    frames: np.ndarray
    times: np.ndarray


def decode_videos(
    items: Sequence[VideoItem], sample_fps: float, size: int, progress: bool = True
) -> list[DecodedVideo]:
    """Decode every item's sampled frames at ``size`` x ``size`` (kept in memory)."""
    out = []
    for item in tqdm(items, desc="decoding frames", unit="video", dynamic_ncols=True,
                     disable=not progress):
        frames, times = read_sampled_frames(item.path, sample_fps, (size, size))
        out.append(DecodedVideo(item, frames, times))
    return out


def encode_decoded(encoder: FrameEncoder, video: DecodedVideo) -> EncodedVideo:
    """Run the (current, eager) encoder over a decoded video's frames."""
    run = _torch_runner(encoder)
    parts = [run(video.frames[i : i + _BATCH]) for i in range(0, len(video.frames), _BATCH)]
    return EncodedVideo(video.item, np.concatenate(parts),
                        thumbnails(video.frames, encoder.config.motion_pool), video.times)


def _encoder_fingerprint(encoder: FrameEncoder, sample_fps: float) -> str:
    cfg = encoder.config
    digest = hashlib.sha1()
    settings = {"v": _CACHE_VERSION, "fps": sample_fps, "backbone": cfg.backbone,
                "size": cfg.input_size, "pool": cfg.pool, "grid": cfg.grid,
                "motion_pool": cfg.motion_pool}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _video_key(path: Path, fingerprint: str) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{fingerprint}"
    return hashlib.sha1(text.encode()).hexdigest()


class _OnnxEncoder:
    """The frozen encoder exported once to ONNX and run with ONNX Runtime on the CPU."""

    def __init__(self, encoder: FrameEncoder, path: Path) -> None:
        if not path.is_file():
            size = encoder.config.input_size
            dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(encoder, (dummy,), path, ["frames"], ["appearance"],
                        {"frames": {0: "n"}, "appearance": {0: "n"}})
        self.session = create_session(path, SessionSettings(device="cpu"),
                                      ["CPUExecutionProvider"])

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        appearance: np.ndarray = self.session.run(None, {"frames": frames})[0]
        return appearance


def _torch_runner(encoder: FrameEncoder) -> Callable[[np.ndarray], np.ndarray]:
    def run(frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            appearance: np.ndarray = encoder.eval()(torch.from_numpy(frames)).numpy()
        return appearance

    return run


def encode_videos(
    items: Sequence[VideoItem],
    encoder: FrameEncoder,
    sample_fps: float,
    cache_dir: str | Path | None,
    engine: str = "onnx",
    progress: bool = True,
) -> list[EncodedVideo]:
    """Encode every item's sampled frames, reading and filling the on-disk cache.

    Args:
        items: videos (or images) to encode.
        encoder: the frozen frame encoder.
        sample_fps: samples per second of video time.
        cache_dir: where ``.npz`` files live; None disables caching.
        engine: "onnx" (ONNX Runtime) or "torch" (eager).
    """
    fingerprint = _encoder_fingerprint(encoder, sample_fps)
    cache = Path(cache_dir) if cache_dir is not None else None
    runner: Callable[[np.ndarray], np.ndarray] | None = None
    size = encoder.config.input_size
    out = []
    for item in tqdm(items, desc="encoding frames", unit="video", dynamic_ncols=True,
                     disable=not progress):
        file = cache / f"{_video_key(item.path, fingerprint)}.npz" if cache else None
        if file is not None and file.is_file():
            with np.load(file) as saved:
                out.append(EncodedVideo(item, saved["appearance"], saved["thumbs"],
                                        saved["times"]))
            continue
        if runner is None:
            if engine == "onnx":
                onnx_dir = cache if cache is not None else Path(tempfile.mkdtemp())
                runner = _OnnxEncoder(encoder, onnx_dir / f"encoder-{fingerprint[:16]}.onnx")
            else:
                runner = _torch_runner(encoder)
        frames, times = read_sampled_frames(item.path, sample_fps, (size, size))
        parts = [runner(frames[i : i + _BATCH]) for i in range(0, len(frames), _BATCH)]
        appearance = np.concatenate(parts).astype(np.float32)
        thumbs = thumbnails(frames, encoder.config.motion_pool)
        if file is not None:
            arrays = {"appearance": appearance, "thumbs": thumbs, "times": times}
            write_atomically(file, functools.partial(_savez, arrays=arrays))
        out.append(EncodedVideo(item, appearance, thumbs, times))
    return out


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a handle, or np.savez would append ".npz" to the name
        np.savez(handle, **arrays)  # type: ignore[arg-type]


