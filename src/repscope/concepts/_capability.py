"""Concepts and interventions: the ``concepts`` command group, its report sections and its demo
step."""

from repscope.capability import Capability, DemoStep, Section

_R = "repscope.concepts._report:"

CAPABILITY = Capability(
    name="concepts",
    summary="Concept directions, erasure, steering, interchange interventions, local linear "
    "views and attention metrics, with their controls.",
    commands=("repscope.cli.concepts:concepts",),
    sections=(
        Section("concepts_factorization", "Linear factorization by concepts", order=78,
                render=_R + "render_factorization",
                description="How much of each embedding the sum of per-concept value means "
                "explains (R², raw and whitened), what the interaction of concepts adds "
                "(binding), the rank each concept takes (k95), whether different concepts' "
                "directions are orthogonal, and whether probes trained on some value "
                "combinations generalise to unseen ones."),
        Section("concepts_directions", "Concept directions and their significance", order=79,
                render=_R + "render_directions",
                description="Three directions for one concept (difference of means, linear probe "
                "weights, CAV), each scored by the held-out AUC of the projection, their "
                "cosines, and the CAV's p-value against random directions and random concept "
                "sets (the null a direction must beat)."),
        Section("concepts_erasure", "Concept erasure (LEACE and INLP)", order=80,
                render=_R + "render_erasure",
                description="A fresh linear probe's held-out accuracy on the concept before and "
                "after erasure (chance is the target) and how far erasure moved the points "
                "(relative to their spread): LEACE is the least-squares change that makes the "
                "concept linearly unrecoverable; INLP projects out probe directions one at a "
                "time and moves points more."),
        Section("concepts_steering", "Steering", order=81, render=_R + "render_steering",
                description="A concept direction added at one layer with growing coefficients: "
                "the target token's next-token log-probability and the KL from the unsteered "
                "distribution, beside a random direction of the same norm (the control) and the "
                "direction's ablation."),
        Section("concepts_das", "Interchange interventions (DAS)", order=82,
                render=_R + "render_das",
                description="Interchange-intervention accuracy of a learned rotation and of a "
                "RevNet map on the trained model and on the same model at random init: a map "
                "expressive enough to reach high IIA on the random model is not evidence that "
                "the model computes the variable."),
        Section("concepts_linearscope", "Local linear views (LinearScope)", order=83,
                render=_R + "render_local_linear",
                description="Piecewise-linear modules written as f(x) = A(x) x + c(x) with the "
                "gates frozen: how much of the output the bias path c(x) carries."),
        Section("concepts_layer_updates", "Layer updates and restricted maps", order=84,
                render=_R + "render_layer_updates",
                description="How well maps of restricted form (a constant, global linear, "
                "low-rank, diagonal, kNN-local) predict each layer's residual update from its "
                "input, on held-out tokens."),
        Section("concepts_cam", "Class activation maps", order=85, render=_R + "render_cam",
                description="Probe accuracy when each image's critical CAM region is masked, "
                "when the same area is masked elsewhere, and when everything but it is masked."),
        Section("concepts_attention", "Attention metrics by layer", order=87,
                render=_R + "render_attention",
                description="Per layer, averaged over heads: mean attention distance (tokens), "
                "normalised entropy, query-key NMI, head diversity, and the share of attention "
                "the second half of each text gives the first."),
        Section("concepts_obsprop", "ObsProp: attention heads for an observable", order=88,
                render=_R + "render_obsprop",
                description="Data-free feature vectors of every attention head for a logit "
                "observable (through the final norm, unembedding and each head's OV circuit): "
                "their norms by layer and head, the top heads, and how they overlap with direct "
                "logit attribution on real prompts."),
    ),
    demo=(
        DemoStep("concepts", order=75, run="repscope.concepts._demo:demo_concepts_step",
                 summary="an 'even digit' direction and its erasure (LEACE vs INLP); attention "
                 "metrics of MiniLM-L6 on Austen", budget_s=20),
    ),
)
