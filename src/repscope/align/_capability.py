"""Alignment: the ``align`` command, its section and the demo's MiniLM-L6 -> L3 map."""

from repscope.capability import Capability, DemoStep, Section

CAPABILITY = Capability(
    name="align",
    summary="Maps between representation spaces, scored on held-out pairs.",
    commands=("repscope.cli.align:align",),
    sections=(
        Section("alignment", "Maps between spaces (alignment)", order=35,
                render="repscope.align._report:render_alignment",
                description="A map fitted on paired training inputs carries one model's "
                "representations onto another's; every number is measured on held-out inputs."),
    ),
    demo=(
        DemoStep("alignment", order=50, run="repscope.align._demo:demo_alignment_step",
                 summary="MiniLM-L6 vs MiniLM-L3 (ONNX): an orthogonal map with held-out "
                 "retrieval", optional=True, budget_s=40),
    ),
)
