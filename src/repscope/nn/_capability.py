"""Structured layers and heads: the ``nn`` commands, the margin-probe kinds, their report
sections and demo step."""

from repscope.capability import Capability, DemoStep, Kind, Section

CAPABILITY = Capability(
    name="nn",
    summary="Structured torch layers and heads from the seed papers (margin heads, ordered "
    "low-rank, butterfly, hyper-connections, separable blocks, Tucker, hashed embeddings, "
    "feature gates, linear attention) with analyses of their structure.",
    commands=("repscope.cli.nn:nn",),
    sections=(
        Section("probe_margins", "Angular margins of margin-head probes", order=34,
                render="repscope.nn._report:render_probe_margins",
                description="An ArcFace/CosFace/ElasticFace cosine probe beside the softmax "
                "probe on the same held-out rows: accuracy and the distribution of per-sample "
                "angular margins (angle to the nearest other class minus angle to the own "
                "class)."),
        Section("low_rank_spectrum", "Low-rank spectra of layer weights", order=48,
                render="repscope.nn._report:render_low_rank",
                description="How much of each weight matrix a rank-k layer keeps "
                "(Eckart–Young): effective rank and the rank for 90% of the energy, layer by "
                "layer, and the singular values of a few layers."),
        Section("tucker", "Tucker decomposition of activations", order=49,
                render="repscope.nn._report:render_tucker",
                description="Tucker (HOOI) of a layer's activation tensor: how the energy "
                "spreads over the directions of each mode (samples, token positions, channels) "
                "and how much a small core keeps."),
    ),
    demo=(
        DemoStep("margins", order=80, run="repscope.nn._demo:demo_margins_step",
                 summary="ArcFace probe vs softmax probe on the last layer (angular margins); "
                 "low-rank spectra of the models' weights", budget_s=20),
        DemoStep("tucker", order=81, run="repscope.nn._demo:demo_tucker_step",
                 summary="Tucker of MiniLM-L6 token activations on Austen", optional=True,
                 budget_s=20),
    ),
    kinds={"probe": {
        "arcface": Kind("repscope.probe._kinds:arcface",
                        "ArcFace cosine probe: additive angular margin 0.5 on a learned "
                        "128-d embedding; records angular margins"),
        "cosface": Kind("repscope.probe._kinds:cosface",
                        "CosFace cosine probe: additive cosine margin 0.35; records angular "
                        "margins"),
        "elasticface": Kind("repscope.probe._kinds:elasticface",
                            "ElasticFace-Arc cosine probe: angular margin drawn per sample "
                            "from N(0.5, 0.05); records angular margins"),
    }},
)
