"""The results database's command: list, show, compare and export records."""

from repscope.capability import Capability

CAPABILITY = Capability(
    name="results",
    summary="Query the results database.",
    commands=("repscope.cli.results:results",),
)
