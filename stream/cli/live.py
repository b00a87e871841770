"""run_stream.py: live captions for videos, cameras and network streams.

With no arguments it captions the bundled sample video with the bundled model and prints each
caption change. Give one or more sources to caption them at once (one output set per source);
Ctrl-C or SIGTERM stops cleanly, with every output file complete and valid.

Exit codes: 0 every source ran to its end; 1 a source failed (the others still ran; each failure
is one line on stderr); 2 bad command line; 3 the model bundle or the device cannot be used;
4 the pipeline or an output failed; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from stream.cli import exits
from stream.cli.arguments import (
    Parser,
    add_log_level,
    frame_size,
    number,
    positive_int,
    run_command,
    whole_number,
)
from stream.cli.cameras import CameraError, Cameras, api_routes
from stream.cli.extras import install_hint
from stream.engines.decoder import ReconnectPolicy
from stream.engines.local import Pipeline
from stream.engines.ray import RayPipeline, RaySettings
from stream.engines.settings import FrameListener, PipelineSettings
from stream.errors import BundleError, DeviceError, MediaError, StreamError, reason
from stream.events import ENDED, Event, StatusEvent
from stream.media.hwaccel import HWACCELS
from stream.media.sources import (
    Source,
    SourceOptions,
    expand_source_lists,
    list_devices,
    parse_sources,
    redact,
    stream_ids,
)
from stream.model.bundle import open_bundle
from stream.model.sessions import DEVICES, PRECISION_HELP, PRECISIONS, SessionSettings
from stream.paths import DEFAULT_BUNDLE, SAMPLE_VIDEO, shown
from stream.settle import DEFAULT_SETTLE, Settling
from stream.sinks.base import PerStream, Sink
from stream.sinks.console import ConsoleSink
from stream.sinks.jsonl import STDOUT, JsonlSink
from stream.sinks.metrics import Metrics
from stream.sinks.mqtt import MqttSink, parse_mqtt_url
from stream.sinks.overlay import OverlayRecorder
from stream.sinks.snapshots import Snapshots
from stream.sinks.subtitles import SubtitleSink
from stream.sinks.summary import SummarySink
from stream.sinks.webview import TOKEN_ENV, WebView, parse_address

if TYPE_CHECKING:  # pydantic is the service extra's: imported where --config is used
    from stream.cli.config import CameraConfig, ServiceConfig

log = logging.getLogger(__name__)

_RAY_OPTIONS = ("workers", "ray_address", "ray_gpus_per_worker", "ray_max_restarts")

SOURCE_FORMS = """\
sources:
  clip.mp4 | photo.jpg          a video file (any container FFmpeg reads) or a still image
  webcam | webcam:N | /dev/videoN
                                a camera (v4l2 on Linux, avfoundation on macOS, dshow on
                                Windows, where webcam:NAME picks a camera by name)
  rtsp://[user:pw@]host/path    an RTSP camera (TCP, --timeout, reconnects)
  http(s)://.../live.m3u8       HTTP(S) or HLS
  lavfi:GRAPH                   an FFmpeg filter graph, e.g. lavfi:testsrc2=size=640x480:rate=30
                                (add ,realtime to pace it like a live camera)
  /tmp/cam.fifo                 a named pipe a producer writes a live stream into
  @cams.txt                     a list of sources, one per line (# starts a comment line;
                                relative paths are taken from the list's directory)

outputs: --jsonl/--srt/--vtt take a file for one source, or a directory (an existing one, a
path ending in /, or any path when there are several sources) that gets STREAM.jsonl etc.;
--jsonl - writes every stream's events to standard output (the console's lines go to stderr).
--mqtt mqtt://[user:pw@]host[:port]/TOPIC publishes each stream's events to TOPIC/STREAM/events,
its statuses to TOPIC/STREAM/status and the caption shown now to TOPIC/STREAM/caption (retained),
QoS 1; --mqtt-frames adds every sampled frame's caption on TOPIC/STREAM/frames.

captions: the model says a caption for every sampled frame; what is shown (subtitles, console,
live view, the retained MQTT caption) changes only once a new caption has held for --settle
frames, and events say when a shown caption begins (new), is said more fully (update) and ends
(end). JSON Lines get every frame's caption (with the one shown) and the events.

engines: --engine local runs every stream in this process; --engine ray spreads them over
Ray actors (--workers), on this machine or a cluster (--ray-address), restarting an actor
whose process dies (its streams reopen and carry on).
"""


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that every sink is closed on the way out."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="run_stream.py",
        description="Live captions for video files, cameras and network streams.",
        epilog=SOURCE_FORMS + "\n" + __doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", default=None,
                        help="a YAML file of global settings and cameras (see the README's "
                             "'Running as a service'); options given here override it; "
                             "SIGHUP reloads its cameras; implies --keep-running")
    parser.add_argument("sources", nargs="*", metavar="SOURCE",
                        help=f"what to caption (default: the bundled sample, "
                             f"{shown(SAMPLE_VIDEO)})")
    parser.add_argument("--model", type=Path, default=DEFAULT_BUNDLE, metavar="DIR",
                        help=f"model bundle directory (default: the bundled model, "
                             f"{shown(DEFAULT_BUNDLE)})")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the model runs; auto picks CUDA when it works (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="ONNX Runtime intra-op threads (default: usable cores); with "
                             "--engine ray, the CPUs of each worker (default: 1)")
    parser.add_argument("--hwaccel", choices=HWACCELS, default="none",
                        help="decode files and network streams on the GPU (cuda: NVDEC), or "
                             "the first hardware decoder that works (auto); where none works, "
                             "software decoding, said in one log line (default: none)")
    out = parser.add_argument_group("outputs")
    out.add_argument("--jsonl", metavar="PATH",
                     help="JSON Lines: one event per line, flushed as written")
    out.add_argument("--srt", metavar="PATH", help="SRT subtitles")
    out.add_argument("--vtt", metavar="PATH", help="WebVTT subtitles")
    out.add_argument("--overlay", metavar="PATH",
                     help="video files only: write a copy with the caption burned into every "
                          "frame (H.264, same frame rate and timing, audio copied)")
    out.add_argument("--mqtt", metavar="URL", default=None,
                     help="publish the events to an MQTT broker, on TOPIC/STREAM/... with QoS 1, "
                          "reconnecting by itself: mqtt://[user[:pw]@]host[:port]/TOPIC "
                          "(mqtts:// for TLS); without pw in the URL, the password is "
                          "$LRCN_MQTT_PASSWORD_FILE's first line or $LRCN_MQTT_PASSWORD "
                          "(not both)")
    out.add_argument("--no-discovery", action="store_true",
                     help="with --mqtt: do not announce the cameras to Home Assistant (MQTT "
                          "discovery, on by default)")
    out.add_argument("--mqtt-frames", action="store_true",
                     help="with --mqtt: publish every sampled frame's caption too, on "
                          "TOPIC/STREAM/frames (ten messages a second per camera)")
    out.add_argument("--snapshots", type=Path, metavar="DIR", default=None,
                     help="write each event's most confident frame as DIR/STREAM/N.jpg (at the "
                          "model's input size) and name it in the event's end record")
    out.add_argument("--quiet", action="store_true", help="print no captions on the console")
    out.add_argument("--settle", type=positive_int, default=DEFAULT_SETTLE, metavar="N",
                     help=f"sampled frames a new caption must hold before it is shown and an "
                          f"event says it; 1 shows every frame's caption (default: "
                          f"{DEFAULT_SETTLE})")
    out.add_argument("--serve", metavar="HOST:PORT", default=None,
                     help="serve the live view (video, caption, history and stats per stream) "
                          "at http://HOST:PORT/; loopback unless a token is set, e.g. "
                          "127.0.0.1:8080; the view stays up after the sources end, until "
                          "Ctrl-C or SIGTERM")
    out.add_argument("--keep-running", action="store_true",
                     help="keep running when every source has ended, for cameras added later "
                          "through the live view's API (--serve: GET/POST /api/cameras, "
                          "DELETE /api/cameras/ID, POST /api/cameras/ID/enable|disable); "
                          "stop with Ctrl-C or SIGTERM")
    out.add_argument("--serve-token", default=None, metavar="TOKEN",
                     help=f"token the live view requires (?token= or Authorization: Bearer); "
                          f"needed to serve beyond loopback (default: ${TOKEN_ENV})")
    batching = parser.add_argument_group("batching and queues")
    batching.add_argument("--max-batch", type=positive_int, default=8,
                          help="frames per encoder call at most (default: 8)")
    batching.add_argument("--max-wait-ms", type=_non_negative, default=20.0,
                          help="how long a batch waits for more frames after its first one "
                               "(default: 20)")
    batching.add_argument("--queue-size", type=positive_int, default=8,
                          help="frames queued per source; live sources drop their oldest "
                               "beyond it, files wait (default: 8)")
    batching.add_argument("--beam", type=positive_int, default=1,
                          help="beam width of caption search; 1 = greedy (default: 1)")
    batching.add_argument("--encode-every-frame", action="store_true",
                          help="run the CNN on every sampled frame, not only on key frames "
                               "(where the picture changed, and at least every few frames "
                               "as the model's bundle.json says); slower, for comparison")
    live = parser.add_argument_group("live sources")
    live.add_argument("--timeout", type=_positive, default=5.0,
                      help="seconds a live source (network, camera, pipe) may take to open "
                           "or stay without data before it is reconnected (default: 5)")
    live.add_argument("--reconnect-attempts", type=_non_negative_int, default=10,
                      help="consecutive failed reopenings of a live source before giving up; "
                           "0 = never reconnect (default: 10)")
    live.add_argument("--reconnect-delay", type=_non_negative, default=0.5,
                      help="seconds before the first reopening, doubled each failure "
                           "(default: 0.5)")
    live.add_argument("--reconnect-max-delay", type=_non_negative, default=10.0,
                      help="longest wait between reopenings (default: 10)")
    live.add_argument("--rtsp-transport", choices=("tcp", "udp"), default="tcp",
                      help="RTSP transport (default: tcp)")
    live.add_argument("--camera-fps", type=_positive, default=None,
                      help="frame rate asked of a webcam (default: the camera's)")
    live.add_argument("--camera-size", type=frame_size, default=None, metavar="WxH",
                      help="frame size asked of a webcam, e.g. 640x480 (default: the camera's)")
    live.add_argument("--realtime", action="store_true",
                      help="play video files at their own speed, as live cameras: frames are "
                           "dropped when captioning falls behind (demos, load tests)")
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: every stream in this process; ray: the streams spread over "
                             "Ray actors, here or on a cluster (default: local)")
    engine.add_argument("--workers", type=positive_int, default=None,
                        help="Ray actors (default: as many as the cluster's CPUs allow at "
                             "--threads each, at most one per source)")
    engine.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="Ray cluster to join, e.g. 10.0.0.1:6379 (default: $RAY_ADDRESS, "
                             "else a Ray started for this run)")
    engine.add_argument("--ray-gpus-per-worker", type=_non_negative, default=0.0, metavar="G",
                        help="GPUs each actor asks for, for its encoder (default: 0)")
    engine.add_argument("--ray-max-restarts", type=_non_negative_int, default=3, metavar="N",
                        help="restarts of an actor whose process died, before its streams end "
                             "with an error (default: 3)")
    parser.add_argument("--list-devices", action="store_true",
                        help="list the cameras FFmpeg finds and exit")
    add_log_level(parser, "info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(get_args_parser(), _main, argv)


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.list_devices:
        return _list_devices()
    config = None
    if args.config is not None:
        try:
            from stream.cli.config import ConfigError, load_config
        except ImportError as error:
            print(f"error: --config needs pydantic and PyYAML ({install_hint('service')}): "
                  f"{error}", file=sys.stderr)
            return exits.USAGE
        try:
            config = load_config(args.config)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return exits.USAGE
        _take_defaults(args, parser, config)
    try:
        settings = PipelineSettings(
            max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
            beam=args.beam, encode_every_frame=args.encode_every_frame,
            reconnect=ReconnectPolicy(args.reconnect_attempts, args.reconnect_delay,
                                      args.reconnect_max_delay),
            source_options=SourceOptions(timeout=args.timeout, rtsp_transport=args.rtsp_transport,
                                  camera_fps=args.camera_fps, camera_size=args.camera_size,
                                  hwaccel=args.hwaccel, realtime=args.realtime))
        ray_settings = _ray_settings(args, parser)
        if args.mqtt is not None:  # read once (a password file too), handed to the sink
            args.mqtt = parse_mqtt_url(args.mqtt)
        given = expand_source_lists(args.sources)
        if not given and (config is None or not config.cameras):
            given = [str(SAMPLE_VIDEO)]
    except (ValueError, MediaError) as error:
        parser.error(redact(str(error)))
    cameras_configured = config.cameras if config is not None else []
    configured = _config_ids(cameras_configured)
    everyone = {**configured, **dict(zip(stream_ids(given, taken=list(configured)), given,
                                         strict=True))}
    disabled = {stream for stream, c in zip(configured, cameras_configured, strict=True)
                if not c.enabled}
    ids = [stream for stream in everyone if stream not in disabled]
    specs = [everyone[stream] for stream in ids]
    try:
        paths = {kind: _output_paths(getattr(args, kind), ids, kind)
                 for kind in ("jsonl", "srt", "vtt") if getattr(args, kind) is not None
                 and ids}
        for stream, camera in zip(configured, cameras_configured, strict=True):
            for kind, path in (camera.outputs.model_dump() if camera.outputs else {}).items():
                if path is not None and stream in ids:  # this camera's own, instead
                    paths.setdefault(kind, {})[stream] = _output_paths(path, [stream], kind)[
                        stream]
    except ValueError as error:
        parser.error(str(error))
    sources = parse_sources(specs, settings.source_options, ids)
    overlays: dict[str, tuple[str, Path]] = {}
    if args.overlay is not None:
        try:
            targets = _output_paths(args.overlay, ids, "mp4", option="overlay")
        except ValueError as error:
            parser.error(str(error))
        for stream, source in sources.items():
            if isinstance(source, Source) and source.kind != "file":
                parser.error(f"--overlay: {source.name} is not a video file (overlays are "
                             f"written from files)")
            if isinstance(source, Source):
                overlays[stream] = (source.url, targets[stream])
    try:
        overlay_recorder = OverlayRecorder(overlays)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return exits.USAGE
    with contextlib.ExitStack() as undo:  # a failure below leaves no server or client behind
        shared: list[Sink] = []  # the sinks that get every stream's events
        listeners: list[FrameListener] = []
        cameras: Cameras | None = None
        if args.serve or config is not None:
            cameras = Cameras(None, settings.source_options, everyone, disabled=disabled)
        metrics: Metrics | None = None
        if args.serve:
            try:
                host, port = parse_address(args.serve)
                view = WebView(host, port, list(everyone), args.serve_token)
                assert cameras is not None
                try:
                    metrics = Metrics(args.device, args.engine)
                except ImportError as error:  # the view works without it
                    log.info("no /metrics: %s", error)
                view.add_routes(api_routes(cameras, metrics))
                view.start()
            except ValueError as error:
                parser.error(str(error))
            except OSError as error:
                print(f"error: --serve {args.serve}: {error}", file=sys.stderr)
                return exits.USAGE
            except ImportError as error:
                print(f"error: --serve needs the web extra ({install_hint('web')}): {error}",
                      file=sys.stderr)
                return exits.USAGE
            undo.callback(view.close)
            shared.append(view)
            listeners.append(view.frame)
        if cameras is not None:
            shared.append(cameras)  # after the outputs: a removed camera's close them
        if metrics is not None:
            shared.append(metrics)
        url = ""
        if args.serve:
            url = f"http://{f'[{host}]' if ':' in host else host}:{view.port}/"
            print(f"live view: {url}", file=sys.stderr)
        snapshots = None
        if args.snapshots is not None:
            try:
                snapshots = Snapshots(args.snapshots)
            except ImportError as error:
                print(f"error: {error}", file=sys.stderr)
                return exits.USAGE
            listeners.append(snapshots.frame)
        if args.mqtt is not None:
            try:
                topics = {stream: c.topic for stream, c in zip(configured, cameras_configured,
                                                               strict=True) if c.topic}
                mqtt = MqttSink(args.mqtt, frames=args.mqtt_frames, topics=topics,
                                discovery=not args.no_discovery,
                                on_set=cameras.switch if cameras is not None else None)
                if cameras is not None:
                    cameras.on_state = mqtt.camera_state
            except ImportError as error:
                print(f"error: {error}", file=sys.stderr)
                return exits.USAGE
            undo.callback(mqtt.close)
            shared.append(mqtt)
        pipeline: Pipeline | RayPipeline
        # Held open when every source has ended: a service waits for cameras, and a live view
        # stays up to be looked at (said in one line when it happens).
        held: str | None = None  # what a held run says when every source has ended
        if args.serve is not None:
            held = f"every source has ended; the live view stays up at {url} until Ctrl-C"
        elif args.keep_running:
            held = "every source has ended; waiting for cameras (--keep-running) until Ctrl-C"
        try:
            if ray_settings is None:
                loaded = open_bundle(args.model, SessionSettings(device=args.device,
                                                                 threads=args.threads,
                                                                 precision=args.precision))
                pipeline = Pipeline(sources, loaded, settings, frame_listeners=listeners,
                                    join_on_exit=False, keep_open=held is not None)
                sample_fps = loaded.bundle.sample_fps
            else:
                pipeline = RayPipeline(sources, args.model, args.device, settings,
                                       ray_settings, frame_listeners=listeners,
                                       join_on_exit=False, keep_open=held is not None,
                                       precision=args.precision)
                sample_fps = pipeline.bundle.sample_fps
            if metrics is not None and isinstance(pipeline, Pipeline):
                metrics.depths = pipeline.mailbox.depths
                pipeline.batch_listeners.append(metrics.batch)
                metrics.decoders = pipeline.decoded
            if cameras is not None:
                cameras.engine = pipeline
            if config is not None and cameras is not None and hasattr(signal, "SIGHUP"):
                _reload_on_sighup(args.config, cameras, configured)
        except (StreamError, ImportError) as error:
            return _failed(error)
        undo.pop_all()  # from here on, _run closes them
    # JSON Lines on standard output leave it to them: the console's lines go to stderr.
    if not args.quiet:
        shared.append(ConsoleSink(sys.stderr if str(args.jsonl) == STDOUT else sys.stdout,
                                  show_stream=len(ids) > 1 or cameras is not None))
    interval = 1.0 / sample_fps  # positive: the bundle's validation says so
    later = {kind: _later_output(getattr(args, kind), ids, kind) for kind in paths}

    def files() -> PerStream:
        outputs = _file_sinks(ids, paths, interval, later)
        if cameras is not None:
            cameras.outputs = outputs
        return outputs

    return _run(pipeline, shared, files,
                SummarySink(ids), overlay_recorder, Settling(args.settle, interval),
                snapshots, held)


def _take_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser,
                   config: ServiceConfig) -> None:
    """The config file's settings, where the command line did not give the option."""
    reconnect = config.reconnect
    values = {"model": config.model, "device": config.device, "precision": config.precision,
              "settle": config.settle,
              "jsonl": config.outputs.jsonl, "srt": config.outputs.srt,
              "vtt": config.outputs.vtt, "mqtt": config.mqtt, "serve": config.serve,
              "reconnect_attempts": reconnect and reconnect.attempts,
              "reconnect_delay": reconnect and reconnect.delay,
              "reconnect_max_delay": reconnect and reconnect.max_delay}
    for dest, value in values.items():
        if value is not None and getattr(args, dest) == parser.get_default(dest):
            setattr(args, dest, value)
    args.keep_running = True  # a service: cameras come and go


def _config_ids(cameras: Sequence[CameraConfig]) -> dict[str, str]:
    """id -> source of the config's cameras: a camera's name, else one made from its source
    (as on the command line) that no name takes."""
    names = [c.name for c in cameras if c.name is not None]
    made = iter(stream_ids([c.source for c in cameras if c.name is None], taken=names))
    return {(c.name if c.name is not None else next(made)): c.source for c in cameras}


def _reload_on_sighup(path: Path, cameras: Cameras, configured: dict[str, str]) -> None:
    """On SIGHUP, read the config file again and apply the difference in its cameras (added,
    removed, another source, enabled or not) in a thread of its own; a file that cannot be
    used is refused in one line and the running set kept."""
    from stream.cli.config import ConfigError, load_config

    current = dict(configured)  # id -> source, as last applied
    lock = threading.Lock()

    def reload() -> None:
        with lock:
            try:
                config = load_config(path)
                if not config.cameras and current and not path.read_text().strip():
                    raise ConfigError(f"{path}: the file is empty (half written?)")
                wanted = _config_ids(config.cameras)
                enabled = dict(zip(wanted, (c.enabled for c in config.cameras), strict=True))
                for stream in [s for s in current if s not in wanted]:
                    cameras.remove(stream)
                    del current[stream]
                for stream, spec in wanted.items():
                    if stream in current:
                        cameras.update(stream, spec, enabled[stream])
                    else:
                        cameras.add({"source": spec, "id": stream, "enabled": enabled[stream]})
                    current[stream] = spec
            except (ConfigError, CameraError) as error:
                print(f"error: reloading: {error}; the cameras are as they were",
                      file=sys.stderr)
                return
            log.warning("%s reloaded: %d camera(s) from the file", path, len(current))

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(
        target=reload, name="reload", daemon=True).start())


def _ray_settings(args: argparse.Namespace,
                  parser: argparse.ArgumentParser) -> RaySettings | None:
    """The Ray engine's settings, or None for the local engine (whose command line must not
    carry Ray's options)."""
    if args.engine == "ray":
        return RaySettings(workers=args.workers, cpus_per_worker=args.threads or 1,
                           gpus_per_worker=args.ray_gpus_per_worker, address=args.ray_address,
                           max_restarts=args.ray_max_restarts)
    given = [f"--{dest.replace('_', '-')}" for dest in _RAY_OPTIONS
             if getattr(args, dest) != parser.get_default(dest)]
    if given:
        raise ValueError(f"{', '.join(given)}: only with --engine ray")
    return None


def _run(pipeline: Pipeline | RayPipeline, shared: list[Sink], files: Callable[[], PerStream],
         summary: SummarySink, overlays: OverlayRecorder, settling: Settling,
         snapshots: Snapshots | None = None, held: str | None = None) -> int:
    """Run the pipeline's events, settled (and with their snapshots), into every sink: the
    per-stream files (opened by ``files``), the ``shared`` sinks (live view, MQTT, console),
    the summary and the overlay recorder; write the overlays once every stream has ended; print
    the summary; return the exit code. A run that is stopped ends its open events first. A
    pipeline ``held`` open (it ends only when stopped) says ``held`` each time every stream
    has ended."""

    def settled(events: list[Event]) -> list[Event]:
        return events if snapshots is None else snapshots.take(events, settling)

    def write_overlays() -> None:
        failed = {stream for stream, s in summary.streams.items() if s.error}
        for stream, error in overlays.write_overlays(skip=failed).items():
            summary.streams[stream].error = error  # still under the SIGTERM handler

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with contextlib.ExitStack() as stack:
            # Unwound in reverse order of entry: the generator (entered last) stops the threads
            # without waiting, the files finish, the broker client waits (bounded) for its
            # acknowledgements, the live view closes, and only then are the threads joined (a
            # network read can take up to --timeout seconds to give up).
            stack.callback(pipeline.close)
            sinks = [stack.enter_context(sink) for sink in shared]
            sinks.insert(0, stack.enter_context(files()))  # written first, closed first
            sinks += [summary, overlays]
            events = stack.enter_context(contextlib.closing(iter(pipeline)))
            try:
                for event in events:
                    _deliver(settled(settling.push(event)), sinks)
                    if (held and isinstance(event, StatusEvent) and event.kind == ENDED
                            and all(s.ended for s in summary.streams.values())):
                        write_overlays()
                        print(held, file=sys.stderr)
            except (KeyboardInterrupt, _Terminated) as stop:
                _deliver(settled(settling.finish()), sinks)
                _deliver(_stopped(summary, "interrupted (Ctrl-C)"
                                  if isinstance(stop, KeyboardInterrupt)
                                  else "terminated (SIGTERM)"), sinks)
                raise
            _deliver(settled(settling.finish()), sinks)
        write_overlays()
    except KeyboardInterrupt:
        summary.report(stopped="interrupted")
        return exits.INTERRUPTED
    except _Terminated:
        summary.report(stopped="terminated")
        return exits.TERMINATED
    except (StreamError, OSError) as error:  # OSError: an output cannot be written
        return _failed(error)
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary.report()
    return exits.FAILED if summary.failed else exits.OK


def _stopped(summary: SummarySink, why: str) -> list[Event]:
    """The ``ended`` status of every stream still running when the run is stopped, ``why`` its
    message: the line outputs say that each stream was stopped, not that it crashed."""
    return [StatusEvent(stream=stream, kind=ENDED, at=time.time(), message=why,
                        dropped=s.dropped, reconnects=s.reconnects, error=None)
            for stream, s in summary.streams.items() if not s.ended]


def _deliver(events: list[Event], sinks: list[Sink]) -> None:
    for event in events:
        for sink in sinks:
            sink.write(event)


def _failed(error: StreamError | ImportError | OSError) -> int:
    """Say why the run cannot go on, in one line; its exit code: 3 for the bundle or the
    device, 2 for a missing extra, 4 for the pipeline or an output."""
    print(f"error: {redact(str(error))}", file=sys.stderr)
    if isinstance(error, (BundleError, DeviceError)):
        return exits.BUNDLE
    return exits.USAGE if isinstance(error, ImportError) else exits.PIPELINE


def _file_sinks(ids: list[str], paths: dict[str, dict[str, Path]], interval: float,
                later: dict[str, Callable[[str], Path] | None]) -> PerStream:
    """The JSON Lines and subtitle files of every stream, opened (all, or none); a stream
    added while running gets its own where the outputs are directories (``later``)."""

    def file_sink(kind: str, path: Path) -> Sink:
        try:
            if kind == "jsonl":  # kept for a source that never opened: it says why
                return JsonlSink(path)
            return SubtitleSink(path, interval, kind, keep_unopened=False)
        except OSError as error:
            raise StreamError(f"--{kind} {path}: cannot write ({reason(error)})") from error

    def added(stream: str) -> list[Sink]:
        return [file_sink(kind, where(stream)) for kind, where in later.items()
                if where is not None]

    with contextlib.ExitStack() as opened:
        sinks: dict[str, list[Sink]] = {stream: [] for stream in ids}
        for stream in ids:
            for kind, by_stream in paths.items():
                if stream in by_stream:  # a camera's own outputs may be its alone
                    sinks[stream].append(opened.enter_context(file_sink(kind,
                                                                        by_stream[stream])))
        opened.pop_all()
    return PerStream(sinks, added)


def _later_output(given: str, ids: list[str], kind: str) -> Callable[[str], Path] | None:
    """Where a stream added while running writes its ``kind`` output: in the directory that
    the other streams' go to, or standard output; None when the option named one file."""
    path = Path(given)
    if given == STDOUT:
        return lambda stream: path
    if len(ids) > 1 or _names_a_directory(given):
        return lambda stream: path / f"{stream}.{kind}"
    return None


def _names_a_directory(given: str) -> bool:
    """An existing directory, or a path written with a trailing separator."""
    return Path(given).is_dir() or given.endswith(("/", "\\"))


def _output_paths(given: str, ids: list[str], kind: str,
                  option: str | None = None) -> dict[str, Path]:
    """One file for one source; a directory of STREAM.KIND files otherwise (``option``: the
    command-line option named in errors, by default ``--KIND``)."""
    path = Path(given)
    if given == STDOUT:
        if kind != "jsonl":
            raise ValueError(f"--{option or kind} -: only --jsonl writes to standard output")
        return dict.fromkeys(ids, path)
    as_dir = len(ids) > 1 or _names_a_directory(given)
    if not as_dir:
        return {ids[0]: path}
    if path.exists() and not path.is_dir():
        raise ValueError(f"--{option or kind} {path}: several sources need a directory, "
                         f"not a file")
    return {stream: path / f"{stream}.{kind}" for stream in ids}


def _list_devices() -> int:
    try:
        devices = list_devices()
    except StreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return exits.FAILED
    if not devices:
        print("no cameras found", file=sys.stderr)
    for index, name in enumerate(devices):
        print(f"webcam:{index}\t{name}")
    return exits.OK


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def _non_negative_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive(text: str) -> float:
    value = number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = number(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
