"""run_stream.py's config file (``--config cameras.yaml``): global defaults and the cameras.

::

    model: models/shapes          # the global defaults; every key is optional
    device: auto
    precision: auto               # auto, fp32 or int8 (see --precision)
    settle: 3
    outputs: {jsonl: out/, srt: out/}
    mqtt: mqtt://broker.local/lrcn/events
    serve: 127.0.0.1:8080
    reconnect: {attempts: 10, delay: 0.5, max_delay: 10}
    cameras:
      - source: rtsp://10.0.0.5/live   # the only key a camera needs
        name: porch                    # its id (default: from the source, as on the command line)
        enabled: true
        outputs: {jsonl: porch.jsonl}  # instead of the global outputs, for this camera
        topic: home/porch              # its MQTT topics: home/porch/events, ... (not TOPIC/ID)

Options given on the command line override the file's; sources given there are cameras too.
The file is read and checked whole (pydantic): any error is one line naming the file, the key
and what was expected, and nothing starts. Passwords never go in the file: the MQTT password
comes from ``LRCN_MQTT_PASSWORD`` or ``LRCN_MQTT_PASSWORD_FILE``, the live view's token from
``LRCN_SERVE_TOKEN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from stream.model.sessions import DEVICES, PRECISIONS

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ConfigError(ValueError):
    """A config file that cannot be used (one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outputs(_Strict):
    """Where events are written: a file, or a directory (an existing one, or ending in /)."""

    jsonl: str | None = None  # as written: a trailing / names a directory
    srt: str | None = None
    vtt: str | None = None


class Reconnect(_Strict):
    attempts: int = Field(10, ge=0)
    delay: float = Field(0.5, ge=0)
    max_delay: float = Field(10.0, ge=0)


class CameraConfig(_Strict):
    source: Annotated[str, StringConstraints(min_length=1)]
    name: Name | None = None
    enabled: bool = True
    outputs: Outputs | None = None
    topic: Annotated[str, StringConstraints(pattern=r"^[^#+]+$")] | None = None


class ServiceConfig(_Strict):
    model: Path | None = None
    device: Literal[DEVICES] | None = None  # type: ignore[valid-type]
    precision: Literal[PRECISIONS] | None = None  # type: ignore[valid-type]
    settle: int | None = Field(None, ge=1)
    outputs: Outputs = Outputs()
    mqtt: str | None = None
    serve: str | None = None
    reconnect: Reconnect | None = None
    cameras: list[CameraConfig] = []

    @field_validator("cameras")
    @classmethod
    def _names_unique(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for camera in cameras:
            if camera.name is not None:
                if camera.name.lower() in seen:
                    raise ValueError(f"the name {camera.name!r} is given to two cameras")
                seen.add(camera.name.lower())
        return cameras


def load_config(path: str | Path) -> ServiceConfig:
    """The config in ``path``, checked.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or does not fit (one line: the file,
            the key, what was expected).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return ServiceConfig.model_validate({} if data is None else data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown key; expected one of {', '.join(_keys(first['loc'][:-1]))}"
        more = error.error_count() - 1
        also = f" (and {more} more)" if more else ""
        raise ConfigError(f"{path}: {key}: {message}{also}") from None


def _keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the section at ``loc`` takes."""
    model: type[BaseModel] = ServiceConfig
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,))
                 if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            break
        model = inner[0]
    return list(model.model_fields)
