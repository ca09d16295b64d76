"""Probing: the ``probe`` command, its four report sections, its demo step and probe kinds."""

from repscope.capability import Capability, DemoStep, Kind, Section

CAPABILITY = Capability(
    name="probe",
    summary="Linear probes per layer with intervals, few-shot, learning curves, calibration.",
    commands=("repscope.cli.probe:probe", "repscope.cli.readout:readout",
              "repscope.cli.probe_points:probe_points", "repscope.cli.drift:drift"),
    sections=(
        Section("probe", "Probe accuracy by layer", order=21,
                render="repscope.probe._report:render_probe",
                description="Held-out accuracy of each probe at each layer (cross-validated, "
                "pooled over folds); the shaded band is the 95% Wilson interval."),
        Section("probe_learning_curve", "Probe learning curves", order=22,
                render="repscope.probe._report:render_probe_learning_curve",
                description="Held-out accuracy against the number of training samples (mean "
                "over repeated subsamples, shaded: 95% interval); 'flat from n' is the smallest "
                "size whose error is within the tolerance of the asymptote."),
        Section("probe_few_shot", "Few-shot probe accuracy", order=23,
                render="repscope.probe._report:render_probe_few_shot",
                description="Accuracy with a few labelled examples per class, over several "
                "random draws of the shots (the test split is fixed and never sampled); shaded: "
                "95% interval."),
        Section("probe_calibration", "Probe calibration", order=24,
                render="repscope.probe._report:render_probe_calibration",
                description="Reliability diagram of the probe's top-label confidence on "
                "held-out data, before and after temperature scaling (fitted on a validation "
                "split); the diagonal is perfect calibration."),
        Section("readout", "Cross-attention readout", order=47,
                render="repscope.probe._report_readout:render_readout",
                description="Held-out R² of learned queries (one per target) cross-attending "
                "to patch tokens, beside ridge on pooled and on flattened tokens, and where "
                "each target's query attends."),
        Section("probe_points", "Per-point probes (mIoU by layer)", order=25,
                render="repscope.probe._report_points:render_probe_points",
                description="Per-point probes (Masked Scene Modeling): every level's map "
                "sampled bilinearly at each point, a ridge and a kNN probe per point, test "
                "mIoU layer by layer and on all levels concatenated (multi-level)."),
        Section("feature_drift", "Feature drift between checkpoints", order=32,
                render="repscope.probe._report_drift:render_feature_drift",
                description="How far each layer's features moved from one checkpoint to "
                "another on the same inputs (e.g. before and after fine-tuning): linear CKA, "
                "per-sample cosine and L2, head-kernel change."),
    ),
    demo=(
        DemoStep("probes", order=30, run="repscope.probe._demo:demo_probe_step",
                 summary="probes per layer (closed-form ridge, kNN) with 95% intervals, "
                 "learning curves and few-shot accuracy at the best layer", budget_s=20),
    ),
    kinds={"probe": {
        "ridge": Kind("repscope.probe._kinds:ridge",
                      "closed-form ridge on one-hot targets, every alpha from one "
                      "eigendecomposition (GCV)"),
        "lda": Kind("repscope.probe._kinds:lda", "linear discriminant analysis, OAS shrinkage"),
        "nb": Kind("repscope.probe._kinds:nb", "Gaussian naive Bayes"),
        "logistic": Kind("repscope.probe._kinds:logistic",
                         "softmax regression (L-BFGS path, C selected on a holdout split)"),
        "knn": Kind("repscope.probe._kinds:knn", "DINO-style weighted k-nearest neighbours"),
        "moment": Kind("repscope.probe._kinds:moment",
                       "moment probing on token sets (mean + second-order moments; token "
                       "layers only)"),
    }},
)
