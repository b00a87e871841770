"""The naive baseline: the loop a user would write without this project.

Decode with PyAV, convert each frame with PIL and numpy, run the PyTorch model eagerly on the
CPU one frame at a time (carrying the LSTM state by hand), decode the caption::

    for frame in container.decode(video=0):
        image = frame.to_image().resize((224, 224))
        x = torch.from_numpy(np.asarray(image))[None]
        appearance = model.encoder(x)
        thumb = avg_pool2d(x.permute(0, 3, 1, 2).float(), pool) / 255
        memory, state = model.memory(appearance[:, None], thumb[:, None], cont, state)
        caption = vocab.decode(decode(model.captioner, memory[:, 0], max_len)[0])

The model is the bundle's architecture. With the training checkpoint at hand (``--checkpoint``)
it has the same weights. Without it the heads are untrained (random) and never say ``<eos>``, so
each caption is decoded for exactly ``caption_steps`` words, the pipeline's own mean caption
length on the same video: the same work per frame. Only speed is compared, never captions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.media.frames import TimeSampler
from stream.model.bundle import BUNDLE_FILE, Bundle


def naive_rate(bundle: Bundle, video: Path, sample_fps: float | None, max_frames: int,
               checkpoint: Path | None = None, caption_steps: int = 7) -> dict[str, Any]:
    """Source frames/s of the naive loop over the first ``max_frames`` frames of ``video``."""
    import torch
    import torch.nn.functional as F

    from lrcn.checkpoint import load_checkpoint
    from lrcn.model import LRCN, LRCNConfig, decode

    if checkpoint is not None and checkpoint.exists():
        model, _, _ = load_checkpoint(checkpoint)
        weights = f"checkpoint {checkpoint}"
        max_len = model.config.max_caption_len
    else:
        torch.manual_seed(0)
        manifest = json.loads((bundle.path / BUNDLE_FILE).read_text(encoding="utf-8"))
        model = LRCN(LRCNConfig.from_dict(manifest["model"]["config"])).eval()
        weights = (f"ImageNet backbone, untrained heads, {caption_steps} words per caption "
                   f"(no checkpoint at hand)")
        max_len = caption_steps
    size, pool = bundle.input_size, model.config.motion_pool
    sampler = TimeSampler(sample_fps)
    state = model.memory.init_state(1)
    frames = captioned = 0
    with torch.no_grad(), av.open(str(video)) as container:
        cpu, start = time.process_time(), time.perf_counter()
        for frame in container.decode(video=0):
            if frames >= max_frames:
                break
            frames += 1
            if not sampler.accept(frame.time or 0.0):
                continue
            image = frame.to_image().resize((size, size))
            x = torch.from_numpy(np.asarray(image).copy())[None]  # (1, S, S, 3) uint8
            appearance = model.encoder(x)
            thumb = F.avg_pool2d(x.permute(0, 3, 1, 2).float(), pool) / 255  # (1, 3, m, m)
            cont = torch.full((1, 1), 0.0 if captioned == 0 else 1.0)
            memory, state = model.memory(appearance[:, None], thumb[:, None], cont, state)
            ids = decode(model.captioner, memory[:, 0], max_len)[0]
            bundle.detokenize(ids)
            captioned += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"source_fps": frames / seconds, "captioned_fps": captioned / seconds,
            "cpu_ms_per_source_frame": 1000 * cpu / frames,
            "frames": frames, "captioned": captioned, "weights": weights,
            "torch_threads": torch.get_num_threads()}
