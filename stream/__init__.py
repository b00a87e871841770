"""lrcn-stream's runtime (no PyTorch): live and archive captions of video streams with an
exported LRCN bundle. Start at :mod:`stream.api` (``caption_stream``) or the command lines.

Rooms, each importing only the ones above it in this list: the shared vocabulary (``errors``,
``events``, ``settle``, ``files``, ``paths``, ``stopping``, ``cuda``), :mod:`stream.media`,
:mod:`stream.model`, :mod:`stream.engines`, :mod:`stream.sinks`, :mod:`stream.api`,
:mod:`stream.archive`, :mod:`stream.cli`.
"""
