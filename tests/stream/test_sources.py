"""Source strings -> what PyAV opens; credentials never shown."""

from __future__ import annotations

import pytest

from stream.errors import MediaError
from stream.media.sources import SourceOptions, open_source, parse_source, redact


@pytest.mark.parametrize("spec, platform, kind, url, fmt, live", [
    # cameras map to each platform's capture format
    ("webcam", "linux", "webcam", "/dev/video0", "v4l2", True),
    ("webcam:2", "linux", "webcam", "/dev/video2", "v4l2", True),
    ("/dev/video1", "linux", "webcam", "/dev/video1", "v4l2", True),
    ("webcam:1", "darwin", "webcam", "1:none", "avfoundation", True),
    ("webcam:HD Camera", "win32", "webcam", "video=HD Camera", "dshow", True),
    # lavfi is live only when paced by the realtime filter
    ("lavfi:testsrc2=size=64x64:rate=5", "linux", "lavfi", "testsrc2=size=64x64:rate=5",
     "lavfi", False),
    ("lavfi:testsrc2,realtime", "linux", "lavfi", "testsrc2,realtime", "lavfi", True),
    # network: RTSP is live; HTTP decides once open (a duration means a file)
    ("rtsp://cam.local/live", "linux", "rtsp", "rtsp://cam.local/live", None, True),
    ("https://example.com/a.m3u8", "linux", "network", "https://example.com/a.m3u8", None, None),
])
def test_source_forms(spec, platform, kind, url, fmt, live):
    source = parse_source(spec, platform=platform)
    assert (source.kind, source.url, source.format, source.live) == (kind, url, fmt, live)


def test_rtsp_options_are_tcp_a_socket_timeout_in_microseconds_and_a_small_probe():
    source = parse_source("rtsp://cam/live", SourceOptions(timeout=2.5))
    assert source.options == {"rtsp_transport": "tcp", "timeout": "2500000",
                              "probesize": "32", "analyzeduration": "0"}
    assert source.timeout == (2.5, 2.5)


def test_webcam_options_ask_for_rate_and_size():
    source = parse_source("webcam", SourceOptions(camera_fps=15, camera_size=(640, 480)),
                          platform="linux")
    assert source.options == {"fflags": "nonblock", "framerate": "15", "video_size": "640x480"}


def test_files_and_images(tmp_path):
    video, image = tmp_path / "a.mkv", tmp_path / "b.PNG"
    video.write_bytes(b"x")
    image.write_bytes(b"x")
    assert (parse_source(str(video)).kind, parse_source(str(video)).live) == ("file", False)
    assert parse_source(f"file://{image}").kind == "image"


@pytest.mark.parametrize("spec, message", [
    ("", "empty source"),
    ("missing.mp4", "missing.mp4: no such file"),
    (".", "is a directory"),
    ("lavfi:", "empty lavfi"),
    ("webcam:", "say which webcam"),
    ("ftpx://host/a", "unknown URL scheme"),
])
def test_bad_source_strings_are_one_line_errors(spec, message):
    with pytest.raises(MediaError, match=message) as caught:
        parse_source(spec, platform="linux")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, shown", [
    ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("http://user@host/x and rtsp://a:b@c/d", "http://***@host/x and rtsp://***@c/d"),
    ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
    # FFmpeg reads user info up to the last "@" before the path: so does redaction
    ("rtsp://admin:p@ss@cam/live", "rtsp://***@cam/live"),
    ("https://cdn/x.m3u8?token=abc&b=1&Password=x", "https://cdn/x.m3u8?token=***&b=1&Password=***"),
])
def test_credentials_are_redacted(text, shown):
    assert redact(text) == shown


def test_names_and_open_errors_carry_no_credentials():
    source = parse_source("rtsp://admin:s3cret@127.0.0.1:9/cam", SourceOptions(timeout=1))
    assert "s3cret" not in source.name and "s3cret" not in repr(source)
    with pytest.raises(MediaError) as caught:
        with open_source(source):  # nothing listens on port 9: refused at once
            pass
    assert "s3cret" not in str(caught.value) and "127.0.0.1:9/cam" in str(caught.value)
