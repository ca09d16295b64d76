"""Extraction: the ``extract`` command and the ``extraction`` report section."""

from repscope.capability import Capability, Section

CAPABILITY = Capability(
    name="extract",
    summary="Model -> activations in a resumable FeatureStore.",
    commands=("repscope.cli.extract:extract",),
    sections=(
        Section("extraction", "Feature extraction", order=10,
                render="repscope.extract._report:render_extraction",
                description="Activations captured from each model; every other section reads "
                "them."),
    ),
)
