"""Hardware decoding: where no hardware decoder works (this machine has no GPU) every source is
decoded in software, said in one line, with the same captions; a device that cannot decode a
source's codec decodes it in software, said for that source."""

from __future__ import annotations

import functools
import logging

import pytest

from stream.api import caption_stream
from stream.engines.settings import PipelineSettings
from stream.events import CaptionEvent
from stream.media import hwaccel
from stream.media.frames import iter_sampled_frames, read_sampled_frames
from stream.media.sources import SourceOptions, parse_source
from stream.paths import SAMPLE_VIDEO


@pytest.fixture
def fresh_hwaccel(monkeypatch):
    """Forget which hardware decoders work, for one test; where one does work (a GPU
    machine), hide it, so that the software fallback is tested everywhere and never skipped."""
    caches = (hwaccel.resolve, hwaccel.device_problem)  # the real ones, whatever a test patches
    for cached in caches:
        cached.cache_clear()
    if hwaccel.device_problem("cuda") is None:
        hidden = functools.cache(lambda device_type: f"{device_type} hidden by the test")
        monkeypatch.setattr(hwaccel, "device_problem", hidden)
    hwaccel.resolve.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


def _hwaccel_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "hwaccel" in r.getMessage()]


@pytest.mark.parametrize("choice, level", [("cuda", logging.WARNING), ("auto", logging.INFO)])
def test_without_a_hardware_decoder_the_fallback_is_one_line(fresh_hwaccel, caplog, choice,
                                                              level):
    with caplog.at_level(logging.INFO, logger="stream.media.hwaccel"):
        assert hwaccel.resolve(choice) is None
        assert hwaccel.resolve(choice) is None  # asked again (a reconnect): said once
    [line] = [r for r in caplog.records if "hwaccel" in r.getMessage()]
    assert line.levelno == level and "decoding in software" in line.getMessage()
    assert "\n" not in line.getMessage()
    if choice == "cuda":
        assert "cuda: " in line.getMessage()  # why: FFmpeg's words, then the driver's state


def test_none_asks_for_nothing(fresh_hwaccel, caplog):
    with caplog.at_level(logging.DEBUG, logger="stream.media.hwaccel"):
        assert hwaccel.resolve("none") is None
    assert not caplog.records
    with pytest.raises(ValueError, match="unknown hwaccel 'nvdec'"):
        hwaccel.resolve("nvdec")
    with pytest.raises(ValueError, match="hwaccel must be one of none, auto, cuda"):
        SourceOptions(hwaccel="gpu")


def test_sources_that_decode_carry_the_choice_and_cameras_do_not(tmp_path):
    options = SourceOptions(hwaccel="cuda")
    assert parse_source(str(SAMPLE_VIDEO), options).hwaccel == "cuda"
    assert parse_source("rtsp://cam/live", options).hwaccel == "cuda"
    assert parse_source("lavfi:testsrc2", options).hwaccel == "none"
    assert parse_source("webcam:0", options, platform="linux").hwaccel == "none"


def test_the_fallback_captions_exactly_as_software_decoding(fresh_hwaccel, caplog):

    def captions(choice: str) -> list[tuple[float, str]]:
        settings = PipelineSettings(source_options=SourceOptions(hwaccel=choice))
        return [(e.pts, e.caption) for e in caption_stream(str(SAMPLE_VIDEO), device="cpu",
                                                            settings=settings)
                if isinstance(e, CaptionEvent)]

    with caplog.at_level(logging.INFO, logger="stream.media.hwaccel"):
        assert captions("cuda") == captions("none")
    assert len(_hwaccel_lines(caplog)) == 1


def test_a_device_without_the_codec_decodes_that_source_in_software(fresh_hwaccel, monkeypatch,
                                                                    caplog):
    """A real HWAccel whose device type has no H.264 decoder here (drm): PyAV decodes in
    software, the source says so in one line, and the pixels are software decoding's."""
    monkeypatch.setattr(hwaccel, "_AUTO_ORDER", ("drm",))
    monkeypatch.setattr(hwaccel, "device_problem", lambda device_type: None)
    with caplog.at_level(logging.INFO, logger="stream.media.hwaccel"):
        frames = [f.rgb for f in iter_sampled_frames(SAMPLE_VIDEO, 10, (64, 64), hwaccel="auto")]
    lines = _hwaccel_lines(caplog)
    assert lines[0] == "hwaccel auto: decoding on drm"
    assert lines[1].endswith("hwaccel auto cannot decode h264; decoding in software")
    software, _ = read_sampled_frames(SAMPLE_VIDEO, 10, (64, 64))
    assert (software == frames).all()
