"""run_stream.py's engines and source lists as a user runs them: --engine ray on a local Ray,
@FILE lists, --jsonl -, and the errors of their options."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt

from tests.conftest import ctrl_c_as_in_a_terminal
from tests.media import write_video
from tests.tools.commands import LIVE, ROOT, run_stream

SAMPLE = ROOT / "examples" / "shapes" / "videos" / "shapes_s5_00000.mp4"
OTHER_LIVE = "lavfi:mandelbrot=size=160x120:rate=30,realtime"

pytestmark = pytest.mark.timeout(300)


def caption_lines(path: Path) -> list[tuple]:
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(e["index"], e["pts"], e["caption"], e["encoded"], e["shown"]) for e in events
            if e["type"] == "caption"]


def settled_events(path: Path) -> list[dict]:
    """The settled events (new, update, end), without their wall-clock times."""
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in e.items() if k != "emitted_at"} for e in events
            if e["type"] in ("new", "update", "end")]


def without_logprob(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "logprob"} for e in events]


@pytest.fixture(scope="module")
def camera_list(tmp_path_factory):
    """A list file with comments, blank lines, a relative path and an absolute one."""
    folder = tmp_path_factory.mktemp("lists")
    write_video(folder / "noise.mp4", frames=40, fps=20, size=(96, 72))
    shutil.copy(SAMPLE, folder / "lobby.mp4")
    listing = folder / "cams.txt"
    listing.write_text(f"# the lobby and the yard\n\nlobby.mp4\n   # the yard\n"
                       f"{folder / 'noise.mp4'}\n", encoding="utf-8")
    return listing


def test_a_source_list_on_ray_gives_the_captions_of_the_local_engine(camera_list, tmp_path):
    local = run_stream(f"@{camera_list}", "--jsonl", str(tmp_path / "local/"), "--quiet")
    on_ray = run_stream(f"@{camera_list}", "--engine", "ray", "--workers", "2", "--jsonl",
                        str(tmp_path / "ray/"), "--srt", str(tmp_path / "ray/"), "--quiet")
    assert local.returncode == 0, local.stderr
    assert on_ray.returncode == 0, on_ray.stderr
    for stream, frames in (("lobby", 89), ("noise", 20)):
        ours = caption_lines(tmp_path / "ray" / f"{stream}.jsonl")
        assert ours == caption_lines(tmp_path / "local" / f"{stream}.jsonl")
        assert len(ours) == frames
        events = settled_events(tmp_path / "ray" / f"{stream}.jsonl")  # the same settling
        local_events = settled_events(tmp_path / "local" / f"{stream}.jsonl")
        assert without_logprob(events) == without_logprob(local_events) != []
        # Log-probabilities, as close as batches of other sizes compute them (Ray's actors
        # step each stream alone, the local engine both together: float sums differ).
        assert [e["logprob"] for e in events] == pytest.approx(
            [e["logprob"] for e in local_events], abs=1e-3)
        assert list(srt.parse((tmp_path / "ray" / f"{stream}.srt").read_text()))
    # The summary table counts the same frames on both engines.
    for stream in ("lobby", "noise"):
        row = [line for line in on_ray.stderr.splitlines() if line.startswith(stream)]
        assert row and row[0].split()[1] == ("89" if stream == "lobby" else "20")
    assert "Traceback" not in on_ray.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_ray_engine_promptly_with_complete_outputs(tmp_path, sig, code):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_stream.py"), LIVE, OTHER_LIVE, "--engine", "ray",
         "--workers", "2", "--quiet", "--log-level", "info", "--jsonl", str(out),
         "--srt", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + 150
    files = [out / "lavfi.jsonl", out / "lavfi-2.jsonl"]
    while time.monotonic() < deadline and process.poll() is None:
        if all(f.exists() and f.read_text().count('"type": "caption"') >= 10 for f in files):
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[1]
    process.send_signal(sig)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert time.monotonic() - sent < 25
    pids = [int(p) for p in re.findall(r"worker \d \(pid (\d+) on", stderr)]
    assert len(pids) == 2
    time.sleep(1)
    for pid in pids:  # the actors' processes are gone with the run
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"actor {pid} left running"
    for f in files:
        lines = caption_lines(f)  # every line complete JSON
        assert len(lines) >= 10
        assert list(srt.parse(f.with_suffix(".srt").read_text()))
    assert "Traceback" not in stderr


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_jsonl_to_standard_output_leaves_the_console_on_stderr():
    result = run_stream(str(SAMPLE), str(SAMPLE), "--jsonl", "-")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    captions = [e for e in events if e["type"] == "caption"]
    assert len(captions) == 2 * 89
    assert {e["stream"] for e in captions} == {"shapes_s5_00000", "shapes_s5_00000-2"}
    assert "shapes_s5_00000-2  " in result.stderr  # the console's caption changes
    assert not Path(ROOT / "-").exists()


def test_source_list_forms(tmp_path):
    from stream.errors import MediaError
    from stream.media.sources import expand_source_lists

    listing = tmp_path / "cams.txt"
    listing.write_text("# cameras\nrtsp://u:p@cam1/live\n\n  webcam:0  \nclips/a.mp4\n"
                       "/abs/b.mp4\nlavfi:testsrc2\n", encoding="utf-8")
    assert expand_source_lists(["x.mp4", f"@{listing}", "y.mp4"]) == [
        "x.mp4", "rtsp://u:p@cam1/live", "webcam:0", str(tmp_path / "clips" / "a.mp4"),
        "/abs/b.mp4", "lavfi:testsrc2", "y.mp4"]
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    with pytest.raises(MediaError, match="names no source"):
        expand_source_lists([f"@{tmp_path / 'empty.txt'}"])


@pytest.mark.parametrize("args, message", [
    (["@/nonexistent/cams.txt"], "@/nonexistent/cams.txt: cannot read the source list"),
    (["--workers", "2"], "--workers: only with --engine ray"),
    (["--ray-address", "10.0.0.1:6379"], "--ray-address: only with --engine ray"),
    (["--mqtt", "http://u:secret@broker/t"], "an MQTT URL starts with mqtt://"),
    (["--mqtt", "mqtt://broker"], "give a topic"),
    (["--srt", "-"], "only --jsonl writes to standard output"),
])
def test_bad_engine_and_list_options_exit_2_with_one_line(args, message):
    result = run_stream(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert message in last and "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_device_an_actor_cannot_use_is_one_line_exit_3():
    result = run_stream(str(SAMPLE), "--engine", "ray", "--workers", "1", "--device", "cuda",
                        timeout=120)
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: device cuda: ") and "Traceback" not in result.stderr


def test_a_ray_cluster_that_cannot_be_reached_is_one_line_exit_4():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_stream.py"), "--engine", "ray", "--ray-address",
         "127.0.0.1:1"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 4, result.stderr
    assert "cannot start the Ray cluster at 127.0.0.1:1" in result.stderr.strip().splitlines()[-1]
