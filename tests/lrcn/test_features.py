"""The feature cache and its two engines."""

from __future__ import annotations

import numpy as np
import pytest

from lrcn.data import Segment, VideoItem
from lrcn.features import encode_videos
from lrcn.model import FrameEncoder, LRCNConfig
from tests.media import write_video


@pytest.fixture(scope="module")
def encoder() -> FrameEncoder:
    config = LRCNConfig(vocab_size=5, backbone="efficientnet_lite0", input_size=64, grid=2)
    return FrameEncoder(config).eval()


@pytest.fixture(scope="module")
def item(tmp_path_factory) -> VideoItem:
    path = write_video(tmp_path_factory.mktemp("v") / "clip.mp4", frames=20, fps=10)
    return VideoItem("clip", path, (Segment(0.0, 2.0, ("a clip",)),))


def test_onnx_engine_matches_eager_torch(encoder, item, tmp_path):
    (onnx,) = encode_videos([item], encoder, 5, tmp_path / "a", engine="onnx", progress=False)
    (eager,) = encode_videos([item], encoder, 5, tmp_path / "b", engine="torch", progress=False)
    assert onnx.appearance.shape == (10, 1280 * 4) and onnx.thumbs.shape == (10, 3, 16, 16)
    np.testing.assert_allclose(onnx.appearance, eager.appearance, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(onnx.thumbs, eager.thumbs, atol=1e-5)
    np.testing.assert_array_equal(onnx.times, eager.times)


def test_cache_is_reused_and_keyed_by_sample_rate(encoder, item, tmp_path):
    first = encode_videos([item], encoder, 5, tmp_path, engine="torch", progress=False)[0]
    cached = sorted(tmp_path.glob("*.npz"))
    assert len(cached) == 1
    again = encode_videos([item], encoder, 5, tmp_path, engine="torch", progress=False)[0]
    np.testing.assert_array_equal(first.appearance, again.appearance)
    assert sorted(tmp_path.glob("*.npz")) == cached  # read, not recomputed
    other = encode_videos([item], encoder, 2, tmp_path, engine="torch", progress=False)[0]
    assert len(other.times) == 4 and len(list(tmp_path.glob("*.npz"))) == 2
