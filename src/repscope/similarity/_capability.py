"""Similarity: the ``similarity`` command, the layer-map section and the demo's CKA map."""

from repscope.capability import Capability, DemoStep, Section

CAPABILITY = Capability(
    name="similarity",
    summary="Layer x layer similarity with any registered measure, tests and intervals.",
    commands=("repscope.cli.similarity:similarity", "repscope.cli.dense:dense"),
    sections=(
        Section("similarity_matrix", "Layer-to-layer similarity", order=31,
                render="repscope.similarity._report:render_similarity_matrix",
                description="Every pair of layers of two models (or of one model with itself) "
                "on the same inputs, for each measure requested, with the best-matching layer "
                "pairs."),
        Section("dense_com", "Dense relational similarity (COM fields)", order=33,
                render="repscope.similarity._report_dense:render_dense_com",
                description="Agreement of two models' local centre-of-mass fields of patch "
                "features (DiveUp) on a common grid, beside a shuffled-image baseline, the "
                "linear CKA of the features and high-norm artifact tokens."),
    ),
    demo=(
        DemoStep("similarity", order=40, run="repscope.similarity._demo:demo_similarity_step",
                 summary="layer x layer linear CKA between the two vision models", budget_s=10),
    ),
)
