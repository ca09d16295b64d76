"""Moment statistics: ``repscope analyze`` (spectrum, import) and the PCA-spectrum section."""

from repscope.capability import Capability, DemoStep, Section

CAPABILITY = Capability(
    name="stats",
    summary="PCA spectra and effective rank from streamed Moments; bring your own arrays.",
    commands=("repscope.cli.analyze:analyze",),
    sections=(
        Section("pca_spectrum", "PCA spectrum and effective rank", order=45,
                render="repscope.stats._report:render_pca_spectrum",
                description="How many directions carry each layer's variance: the cumulative "
                "explained variance of the principal components, and the effective rank "
                "(exponential of the spectral entropy)."),
    ),
    demo=(
        DemoStep("spectra", order=20, run="repscope.stats._demo:demo_spectra_step",
                 summary="PCA spectrum and effective rank of every layer (streamed Moments)",
                 budget_s=10),
    ),
)
