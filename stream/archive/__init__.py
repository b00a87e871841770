"""Archive captioning: many long videos, resumable, on worker processes or a Ray cluster.

The driver (:mod:`stream.archive.cli`) finds the videos, fingerprints them, skips those already
done and plans their tasks (:mod:`stream.archive.inputs`), hands the tasks to an engine
(:mod:`stream.archive.engines`: local processes or Ray Data), whose workers caption them
(:mod:`stream.archive.worker`), then stitches each video's chunks in PTS order and writes its
outputs and its manifest record (:mod:`stream.archive.outputs`). The archive shares only the
core (bundle, frames, captioning, sinks) with the live pipeline.
"""
