"""Where events go: every output is a sink that takes events (console, JSON Lines, subtitles,
summary, overlay, web view, MQTT); the engines do not know which sinks run."""
