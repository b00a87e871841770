"""Media: what a user types as a source, opening it (files, pipes, cameras, network streams),
and the one path that decodes, seeks, samples and converts its frames, on CPU or NVDEC."""
