"""A stream taken over from a process that died (a Ray actor's restart) resumes a file after its
last captioned frame: exactly the sampled frames an uninterrupted run has after that point, in
every container (MPEG-TS seeks land late, raw H.264 cannot seek: it is reopened, yet says
"opened" once), and a source that fails to resume ends its own stream alone. The Ray engine's
side (an actor killed mid-file) is tests/stream/test_ray_resume.py."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from stream.engines.decoder import Resume
from stream.engines.local import Pipeline
from stream.events import ENDED, OPENED, CaptionEvent, StatusEvent
from stream.media.frames import TimeSampler
from stream.media.sources import parse_source
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE
from tests.media import write_video


@pytest.fixture(scope="module")
def loaded():
    return open_bundle(DEFAULT_BUNDLE, SessionSettings(device="cpu", threads=1))


def _run(loaded, paths, resume=None):
    """Every caption event and the ended statuses of a local run over ``paths``."""
    sources = {name: parse_source(str(path)) for name, path in paths.items()}
    captions: dict[str, list[tuple[int, float]]] = {name: [] for name in paths}
    ended: dict[str, StatusEvent] = {}
    for event in Pipeline(sources, loaded, resume=resume):
        if isinstance(event, CaptionEvent):
            captions[event.stream].append((event.index, round(event.pts, 4)))
        elif isinstance(event, StatusEvent) and event.kind == ENDED:
            ended[event.stream] = event
    return captions, ended


# (suffix, PyAV format, GOP in frames): a 2 s GOP makes a seek land far from its target
CONTAINERS = [
    (".ts", "mpegts", 60),  # seeks land late (after the target): the retry further back
    (".flv", "flv", 60),
    (".mp4", None, 60),
    (".mkv", "matroska", 15),
]


@pytest.mark.parametrize("suffix, container, gop", CONTAINERS)
@pytest.mark.parametrize("resume_after", [
    3,  # early: inside the first GOP
    25,  # mid-GOP, far from the keyframe before it
    95,  # near the end (a seek that lands late finds nothing)
])
def test_a_resumed_file_gives_exactly_the_frames_after_the_resume_point(
        loaded, tmp_path, suffix, container, gop, resume_after):
    # 10 s at 160x120: MPEG-TS seeks (by byte position) land a GOP late at this size
    # a non-zero start time: MPEG-TS has its own (1.4 s), the others start at 1.5 s
    first_pts = 0 if container == "mpegts" else 45
    path = write_video(tmp_path / f"clip{suffix}", frames=300, fps=30, size=(160, 120),
                       container=container, keyframe_every=gop, first_pts=first_pts)
    whole, _ = _run(loaded, {"cam": path})
    reference = whole["cam"]
    assert len(reference) == 100  # 10 s at 10 fps
    index, pts = reference[resume_after - 1]
    resumed, ended = _run(loaded, {"cam": path},
                          {"cam": Resume(index=index + 1, pts=pts, decoded_at=time.time())})
    assert resumed["cam"] == reference[resume_after:]
    assert ended["cam"].error is None


def test_an_unseekable_raw_h264_file_resumes_by_decoding_from_its_start(loaded, tmp_path):
    """Raw H.264 cannot seek; the resume decodes from the start and skips, beside a healthy
    source that never notices."""
    raw = write_video(tmp_path / "clip.h264", frames=90, fps=30, container="h264")
    # (raw H.264 has no timestamps: frames are timed by position, the same in both runs)
    healthy = write_video(tmp_path / "other.mp4", frames=60, fps=30, seed=3)
    whole, _ = _run(loaded, {"raw": raw, "other": healthy})
    index, pts = whole["raw"][11]
    resumed, ended = _run(loaded, {"raw": raw, "other": healthy},
                          {"raw": Resume(index=index + 1, pts=pts, decoded_at=time.time())})
    assert resumed["raw"] == whole["raw"][12:]
    assert resumed["other"] == whole["other"]
    assert ended["raw"].error is None and ended["other"].error is None


def test_a_refused_seek_reopens_an_unseekable_file_without_a_second_opened_status(
        loaded, tmp_path, caplog):
    """The resume of a raw H.264 file opens it twice (the seek is refused, then it is decoded
    from its start): the stream still says OPENED once, then captions and ends."""
    raw = write_video(tmp_path / "clip.h264", frames=30, fps=30, container="h264")
    caplog.set_level(logging.INFO, logger="stream.media.frames")
    events = list(Pipeline({"raw": parse_source(str(raw))}, loaded,
                           resume={"raw": Resume(index=5, pts=0.4, decoded_at=time.time())}))
    refused = [r for r in caplog.records if "decoding from the start" in r.getMessage()]
    assert len(refused) == 1 and "cannot seek" in refused[0].getMessage()  # opened twice
    kinds = [e.kind for e in events if isinstance(e, StatusEvent)]
    assert kinds == [OPENED, ENDED]
    assert events[0].kind == OPENED and "h264" in events[0].message
    shown = [e for e in events if isinstance(e, CaptionEvent)]
    assert [e.index for e in shown] == list(range(5, 5 + len(shown))) and shown
    assert shown[0].pts > 0.4 and events[-1].error is None


def test_a_sampler_started_at_a_time_keeps_the_whole_runs_grid():
    times = [k / 30 for k in range(60)]
    full = TimeSampler(10)
    kept = [t for t in times if full.accept(t)]
    later = TimeSampler(10, start=kept[4] + 1e-6)
    assert [t for t in times if t >= kept[4] + 1e-6 and later.accept(t)] == kept[5:]


def test_a_seek_that_fails_ends_its_own_stream_only(loaded, tmp_path, monkeypatch):
    """Any other error seeking one source (here: the container raises invalid data) ends that
    stream with an error status; the other streams run to their end."""
    import av

    broken = write_video(tmp_path / "broken.mp4", frames=60, fps=30)
    healthy = write_video(tmp_path / "healthy.mp4", frames=60, fps=30, seed=3)
    real_seek = av.container.InputContainer.seek
    lock = threading.Lock()

    def seek(self, *args, **kwargs):
        with lock:
            if "broken" in self.name:
                raise av.error.InvalidDataError(1094995529, "Invalid data found")
        return real_seek(self, *args, **kwargs)

    monkeypatch.setattr(av.container.InputContainer, "seek", seek)
    resumed, ended = _run(loaded, {"broken": broken, "healthy": healthy},
                          {"broken": Resume(index=5, pts=0.4, decoded_at=time.time())})
    assert len(resumed["healthy"]) == 20 and ended["healthy"].error is None
    assert ended["broken"].error is not None
    assert "broken.mp4" in ended["broken"].error and "seek" in ended["broken"].error
