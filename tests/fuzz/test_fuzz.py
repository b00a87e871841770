"""Property-based tests of the pieces that parse or format untrusted data: each input either
works, with valid output, or raises the project's own error type."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import srt
import webvtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.bundle import BUNDLE_FILE, read_bundle
from stream.errors import BundleError, MediaError
from stream.events import CaptionEvent, StatusEvent
from stream.sinks import JsonlSink, SubtitleSink
from stream.sources import parse_source, redact

ROOT = Path(__file__).resolve().parents[2]
# Derandomized: the same examples on every run, so that CI is reproducible.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

url_parts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@FUZZ
@given(spec=st.one_of(
    st.text(max_size=60),
    st.builds(lambda s, u, p, h, rest: f"{s}://{u}:{p}@{h}/{rest}",
              st.sampled_from(["rtsp", "http", "https", "rtmp", "ftp", "x"]), url_parts,
              url_parts, url_parts, url_parts),
    st.builds(lambda x: f"webcam:{x}", url_parts),
    st.builds(lambda x: f"lavfi:{x}", url_parts)))
def test_source_strings_parse_or_raise_media_error(spec):
    try:
        source = parse_source(spec, platform="linux")
    except MediaError as error:
        assert "\n" not in str(error)
        return
    assert source.kind in ("file", "image", "webcam", "rtsp", "network", "lavfi")
    assert source.name == redact(source.name)  # what is shown is already redacted


@FUZZ
@given(user=url_parts.filter(lambda u: "/" not in u and "@" not in u),
       password=url_parts.filter(lambda p: len(p) >= 4 and "/" not in p and "?" not in p
                                 and "#" not in p and not p.isspace()
                                 and not any(c.isspace() for c in p)),
       host=st.from_regex(r"[a-z0-9.]{1,20}", fullmatch=True))
def test_passwords_never_survive_redaction(user, password, host):
    text = f"cannot open rtsp://{user}:{password}@{host}/live (refused)"
    assert redact(text) == f"cannot open rtsp://***@{host}/live (refused)"


captions = st.text(max_size=80)
times = st.floats(min_value=0, max_value=400_000, allow_nan=False)


@FUZZ
@given(items=st.lists(st.tuples(times, captions), max_size=25),
       fmt=st.sampled_from(["srt", "vtt"]))
def test_any_captions_and_times_make_valid_subtitles(tmp_path_factory, items, fmt):
    path = tmp_path_factory.mktemp("subs") / f"out.{fmt}"
    with SubtitleSink(path, frame_interval=0.1) as sink:
        for i, (pts, text) in enumerate(items):
            sink.write(CaptionEvent("s", i, pts, 0.0, 0.0, text, -1.0, 1.0, True, i == 0))
    content = path.read_text(encoding="utf-8")
    if fmt == "srt":
        cues = list(srt.parse(content))
        starts = [c.start.total_seconds() for c in cues]
    else:
        cues = list(webvtt.read(str(path), strict=True))
        starts = [c.start_in_seconds for c in cues]
    assert starts == sorted(starts)
    assert len(cues) == sink.cues


@FUZZ
@given(text=captions, logprob=st.floats(allow_nan=True, allow_infinity=True),
       pts=st.floats(allow_nan=True, allow_infinity=True))
def test_any_event_is_one_valid_json_line(tmp_path_factory, text, logprob, pts):
    path = tmp_path_factory.mktemp("events") / "e.jsonl"
    with JsonlSink(path) as sink:
        sink.write(CaptionEvent("s", 0, pts, 0.0, 0.0, text, logprob, 1.0, True, True))
        sink.write(StatusEvent("s", "ended", 0.0, message=text, error=text))
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 3
    first = json.loads(lines[0])
    assert first["caption"] == text
    for key in ("pts", "logprob"):
        assert first[key] is None or math.isfinite(first[key])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def shipped_manifest():
    return json.loads((ROOT / "models/shapes" / BUNDLE_FILE).read_text())


@FUZZ
@given(path=st.lists(st.text(max_size=12), min_size=1, max_size=3), value=json_values)
def test_bundle_json_with_any_field_changed_loads_or_raises_bundle_error(
        tmp_path_factory, shipped_manifest, path, value):
    data = json.loads(json.dumps(shipped_manifest))
    node = data
    for key in path[:-1]:  # walk into existing dictionaries where the path allows
        if isinstance(node, dict) and isinstance(node.get(key), dict):
            node = node[key]
    if isinstance(node, dict):
        keys = list(node)
        node[keys[hash(path[-1]) % len(keys)] if keys else path[-1]] = value
    directory = tmp_path_factory.mktemp("bundle")
    for name in ("encoder.onnx", "memory.onnx", "captioner.onnx"):
        shutil.copy(ROOT / "models/shapes" / name, directory / name)
    (directory / BUNDLE_FILE).write_text(json.dumps(data))
    try:
        read_bundle(directory)
    except BundleError as error:
        assert "\n" not in str(error)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_bundle_json_of_any_bytes_loads_or_raises_bundle_error(tmp_path_factory, raw):
    directory = tmp_path_factory.mktemp("bytes")
    (directory / BUNDLE_FILE).write_bytes(raw)
    with pytest.raises(BundleError):
        read_bundle(directory)
