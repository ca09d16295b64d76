"""The report: the ``report`` command, and sections for records of retired analyses."""

from repscope.capability import Capability, Section

CAPABILITY = Capability(
    name="report",
    summary="Render recorded results into one self-contained HTML page.",
    commands=("repscope.cli.report:report",),
    sections=(
        Section("separability", "Class separability by layer (retired analysis)", order=90,
                render="repscope.report._legacy:render_legacy_separability",
                description="Cross-validated accuracy of a scikit-learn logistic regression at "
                "each layer, from a database written before the analysis was retired."),
        Section("cka", "Layer-to-layer CKA (retired analysis)", order=91,
                render="repscope.report._legacy:render_legacy_cka",
                description="Linear CKA of every pair of layers of two models, from a database "
                "written before the analysis was retired."),
    ),
)
