"""Ray itself, for both engines that use it (live actors and archive workers): importing it with
a one-line hint when it is missing, and joining a cluster or starting a local one."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from stream.errors import StreamError, reason
from stream.media.sources import redact

RAY_EXTRA = "pip install 'lrcn-stream[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, its logging cut to errors.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
        import ray.exceptions
    except ImportError as error:
        raise ImportError(f"--engine ray needs Ray ({RAY_EXTRA}): {error}") from error
    logging.getLogger("ray").setLevel(logging.ERROR)
    return ray


def connect(address: str | None = None, cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray with
    ``cpus`` CPUs (default: this machine's). Nothing happens when Ray is already initialised.

    Returns:
        True when this call initialised Ray (the caller then shuts it down when done).

    Raises:
        ImportError: Ray is not installed.
        StreamError: the cluster cannot be reached, or a local Ray cannot start.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            _probe(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR)
    except (OSError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {redact(address)}" if address else "a local Ray"
        raise StreamError(f"cannot start {where}: {reason(error)}") from error
    return True


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast when a cluster's HOST:PORT takes no connection (Ray itself retries for minutes).
    Other forms (``auto``, ``ray://...``) are left to Ray.

    Raises:
        OSError: nothing answers there.
    """
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass
