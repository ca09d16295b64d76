"""OOD detection: the ``ood`` command, its two report sections and its demo step."""

from repscope.capability import Capability, DemoStep, Section

CAPABILITY = Capability(
    name="ood",
    summary="Post-hoc OOD detectors on frozen features, per layer, with explicit metrics.",
    commands=("repscope.cli.ood:ood",),
    sections=(
        Section("ood", "Out-of-distribution detection", order=43,
                render="repscope.ood._report:render_ood",
                description="Each detector is fitted on part of the ID samples and scores the "
                "held-out ID samples and the OOD samples (higher = more in-distribution). "
                "AUROC by detector and layer, ID and OOD score histograms (bins chosen when "
                "the analysis ran) and ROC curves at the best layer of each detector."),
        Section("ood_diagnostics", "Why OOD detection is hard here (PT-OOD diagnostics)",
                order=44, render="repscope.ood._report:render_ood_diagnostics",
                description="How well a linear probe separates ID from OOD features "
                "(cross-validated; 0.5 = not at all) and the share of OOD samples the ID "
                "probe assigns to an ID class with high confidence: OOD data inside the ID "
                "classes' linear regions defeats boundary-based scores (MSP, energy), not "
                "instance-level kNN."),
    ),
    demo=(
        DemoStep("ood", order=45, run="repscope.ood._demo:demo_ood_step",
                 summary="OOD detectors per layer: MNIST digits 0-4 as ID, 5-9 as OOD",
                 budget_s=20),
    ),
)
