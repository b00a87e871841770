"""run_stream.py --config: the file checked whole, each error one line naming the file and the
key; the cameras it names started (or listed disabled), and SIGHUP applying only the
difference, a broken file refused with the running set kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from stream.cli.config import ConfigError, load_config
from tests.stream.test_camera_api import LIVE, cameras, records, until
from tests.stream.test_webview import start_serving
from tests.tools.commands import ROOT

pytestmark = pytest.mark.timeout(300)


def test_the_example_config_is_valid():
    config = load_config(ROOT / "examples" / "cameras.yaml")
    assert [c.name for c in config.cameras] == ["sample", "pattern", "porch"]
    assert config.cameras[2].enabled is False and config.cameras[2].topic == "home/porch"


@pytest.mark.parametrize("text, message", [
    ("colour: red\n", "colour: unknown key; expected one of model, device"),
    ("settle: three\n", "settle: Input should be a valid integer"),
    ("settle: 0\n", "settle: Input should be greater than or equal to 1"),
    ("device: tpu\n", "device: Input should be"),
    ("cameras:\n  - name: a\n", "cameras.0.source: Field required"),
    ("cameras:\n  - source: x\n    nmae: a\n", "cameras.0.nmae: unknown key; expected one of "
                                              "source, name, enabled, outputs, topic"),
    ("cameras: [{source: a, name: x}, {source: b, name: X}]\n",
     "cameras: the name 'X' is given to two cameras"),
    ("cameras: [{source: a, name: 'no spaces'}]\n", "cameras.0.name: String should match"),
    ("cameras:\n  - source: [\n", "not valid YAML (line 3)"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)
    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {error.value}"


def test_sighup_applies_the_difference_and_refuses_a_broken_file(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "cameras.yaml"

    def write(cameras_text: str) -> None:
        replace(f"settle: 1\noutputs: {{jsonl: {out}/}}\ncameras:\n{cameras_text}")

    def replace(text: str) -> None:  # as an editor saves: never half written
        (tmp_path / "new.yaml").write_text(text)
        os.replace(tmp_path / "new.yaml", path)

    write(f"  - {{source: '{LIVE}', name: porch}}\n  - {{source: '{LIVE}', name: yard}}\n"
          f"  - {{source: '{LIVE}', name: garage, enabled: false}}\n")
    process, url = start_serving("--config", str(path), "--queue-size", "64")
    base = url.rstrip("/")
    lines: list[str] = []
    said = threading.Condition()

    def pump() -> None:  # stderr, line by line, to wait on what the service says
        assert process.stderr is not None
        for line in process.stderr:
            with said:
                lines.append(line)
                said.notify_all()

    def wait_said(text: str, times: int = 1) -> None:
        with said:
            assert said.wait_for(lambda: sum(text in line for line in lines) >= times, 90), text

    threading.Thread(target=pump, daemon=True).start()
    try:
        listed = until(base, lambda c: c["porch"]["state"] == c["yard"]["state"] == "live",
                       "the file's cameras live")
        assert listed["garage"]["state"] == "disabled" and not listed["garage"]["enabled"]
        # yard removed, garage enabled, shed added; porch as it was.
        write(f"  - {{source: '{LIVE}', name: porch}}\n  - {{source: '{LIVE}', name: garage}}\n"
              f"  - {{source: '{LIVE}', name: shed}}\n")
        process.send_signal(signal.SIGHUP)
        until(base, lambda c: set(c) == {"porch", "garage", "shed"} and all(
            camera["state"] == "live" for camera in c.values()), "the difference applied")
        replace("cameras: [{source: a, colour: red}]\n")  # broken: refused in one line
        process.send_signal(signal.SIGHUP)
        wait_said("error: reloading: ")
        assert set(cameras(base)) == {"porch", "garage", "shed"}  # as they were
        assert any("colour: unknown key" in line for line in lines)
        write(f"  - {{source: '{LIVE}', name: porch}}\n")  # then a good one again
        process.send_signal(signal.SIGHUP)
        until(base, lambda c: set(c) == {"porch"}, "the good file applied")
        until(base, lambda c: c["porch"]["frames"] >= 20, "porch goes on")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    porch = [e for e in records(out / "porch.jsonl") if e["type"] == "caption"]
    assert [e["index"] for e in porch] == list(range(len(porch)))  # untouched by the reloads
    assert [e["index"] for e in porch if e["reset"]] == [0]
    assert (out / "yard.jsonl").exists()  # removed: its file complete, and kept
