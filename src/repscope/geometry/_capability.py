"""Geometry: the ``geometry`` command, its report sections and its demo step."""

from repscope.capability import Capability, DemoStep, Section

CAPABILITY = Capability(
    name="geometry",
    summary="Separability (supervised and label-free), coding rate, subspace structure and "
    "every registered geometry measure per layer.",
    commands=("repscope.cli.geometry:geometry", "repscope.cli.leakage:leakage",
              "repscope.cli.subset:subset", "repscope.cli.lipschitz:lipschitz"),
    sections=(
        Section("geometry", "Geometry by layer", order=26,
                render="repscope.geometry._report:render_geometry",
                description="Registered geometry measures at each layer, one panel per family "
                "(supervised separability, label-free persistence, coding rate, ...)."),
        Section("geometry_persistence", "Label-free separability: H0 persistence", order=27,
                render="repscope.geometry._report:render_geometry_persistence",
                description="0-dimensional persistence of the L2-normalised embeddings "
                "(minimum-spanning-tree edge lengths): barcodes and summaries by layer."),
        Section("geometry_coding_rate", "Coding rate and rate reduction", order=28,
                render="repscope.geometry._report:render_geometry_coding_rate",
                description="Coding rate of each layer, of each class, and the rate reduction "
                "of the true classes against shuffled labels (MCR^2)."),
        Section("geometry_persistence_track", "Persistence across checkpoints", order=29,
                render="repscope.geometry._report:render_geometry_persistence_track",
                description="A label-free persistence score across fine-tuning checkpoints "
                "and where it plateaus (relative change below a tolerance)."),
        Section("geometry_feature_weighting", "Feature weighting by layer", order=36,
                render="repscope.geometry._report_tools:render_feature_weighting",
                description="Spread of per-attribute probe accuracies and spectral entropy "
                "at each layer (the projection-head feature-weighting inequality)."),
        Section("geometry_leakage", "Leakage between sub-spaces", order=37,
                render="repscope.geometry._report_tools:render_leakage",
                description="Cross-probe matrix: probe accuracy of every attribute from every "
                "feature group, above chance, with intervals."),
        Section("geometry_hardness", "InfoNCE hardness vs temperature", order=38,
                render="repscope.geometry._report_tools:render_hardness",
                description="Effective number of negatives of the contrastive loss as a "
                "function of the temperature."),
        Section("geometry_lipschitz", "Extractor Lipschitz ratio and translation sensitivity",
                order=39, render="repscope.geometry._report_tools:render_lipschitz",
                description="How much each layer stretches input differences and moves under "
                "a translation, against a non-expansive scattering baseline."),
        Section("geometry_subset", "Diverse subsets (DPP)", order=41,
                render="repscope.geometry._report_tools:render_subset",
                description="Samples chosen by projection DPP / volume sampling and how "
                "diverse they are."),
        Section("geometry_availability", "Shortcut availability probe", order=42,
                render="repscope.geometry._report_tools:render_availability",
                description="Which of two attributes a probe follows on conflict examples."),
    ),
    demo=(
        DemoStep("geometry", order=35, run="repscope.geometry._demo:demo_geometry_step",
                 summary="per-layer Fisher ratio, coding rate, H0 persistence and intrinsic "
                 "dimension", budget_s=20),
    ),
)
