"""Sparse autoencoders: the ``sae`` command group, its section and the demo's TopK sweep."""

from repscope.capability import Capability, DemoStep, Section

CAPABILITY = Capability(
    name="sae",
    summary="Train, evaluate and inspect sparse autoencoders on any layer.",
    commands=("repscope.cli.sae:sae",),
    sections=(
        Section("sae", "Sparse autoencoders", order=50,
                render="repscope.sae._report:render_sae",
                description="Sparse dictionaries trained on a layer's activations: how well "
                "they reconstruct held-out inputs at what sparsity, how their latents fire, and "
                "which inputs activate a few of them most."),
    ),
    demo=(
        DemoStep("sae", order=60, run="repscope.sae._demo:demo_sae_step",
                 summary="sparse autoencoders: TopK k = 4, 8, 16 on EfficientNet-Lite0's last "
                 "block", budget_s=20),
    ),
)
