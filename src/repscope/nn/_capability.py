"""Structured layers and heads: the margin-probe kinds, their report section and demo step."""

from repscope.capability import Capability, DemoStep, Kind, Section

CAPABILITY = Capability(
    name="nn",
    summary="Structured torch layers and heads from the seed papers (margin heads, ordered "
    "low-rank, butterfly, hyper-connections, separable blocks, Tucker, hashed embeddings, "
    "feature gates, linear attention) with analyses of their structure.",
    sections=(
        Section("probe_margins", "Angular margins of margin-head probes", order=34,
                render="repscope.nn._report:render_probe_margins",
                description="An ArcFace/CosFace/ElasticFace cosine probe beside the softmax "
                "probe on the same held-out rows: accuracy and the distribution of per-sample "
                "angular margins (angle to the nearest other class minus angle to the own "
                "class)."),
    ),
    demo=(
        DemoStep("margins", order=80, run="repscope.nn._demo:demo_margins_step",
                 summary="ArcFace probe vs softmax probe on the last layer: angular margins",
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
