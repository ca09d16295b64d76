"""The zoo's commands: the offline models, data sets and layer names."""

from repscope.capability import Capability

CAPABILITY = Capability(
    name="zoo",
    summary="The offline model zoo and data sets.",
    commands=("repscope.cli.zoo:models", "repscope.cli.zoo:datasets", "repscope.cli.zoo:layers"),
)
