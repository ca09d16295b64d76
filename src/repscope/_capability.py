"""The core capability: ``repscope demo`` (the main job)."""

from repscope.capability import Capability

CAPABILITY = Capability(
    name="demo",
    summary="The report on the embedded default models and data (runs every demo step).",
    commands=("repscope.cli.demo:demo",),
)
