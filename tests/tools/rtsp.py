"""Start and stop the RTSP test server (tests/tools/rtsp_server.py) as a separate process."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER = Path(__file__).with_name("rtsp_server.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RtspServer:
    """``with RtspServer(python, video, port) as server:`` serves rtsp://127.0.0.1:PORT/cam."""

    def __init__(self, python: str, video: Path, port: int, user: str | None = None,
                 password: str | None = None) -> None:
        self.command = [python, str(SERVER), str(video), str(port)]
        if user:
            self.command += ["--user", user, "--password", password or ""]
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    def url(self, credentials: str = "") -> str:
        at = f"{credentials}@" if credentials else ""
        return f"rtsp://{at}127.0.0.1:{self.port}/cam"

    def start(self, timeout: float = 30.0) -> RtspServer:
        deadline = time.monotonic() + timeout
        while True:  # the port of a killed server can take a moment to be free again
            # stderr to a file: a pipe nobody reads could fill up and stall the server.
            self._log = tempfile.TemporaryFile("w+")
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                            stderr=self._log, text=True)
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
            if line.strip() == "ready":
                return self
            self.process.wait(5)
            if time.monotonic() > deadline:
                self._log.seek(0)
                error = self._log.read()
                raise RuntimeError(f"RTSP server did not start: {line!r} {error}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
