"""Weight space: the ``weights`` command group, its report sections and its demo step."""

from repscope.capability import Capability, DemoStep, Section

_R = "repscope.weights._report:"

CAPABILITY = Capability(
    name="weights",
    summary="Interpolation and loss barriers, permutation alignment, merging and task vectors "
    "on state dicts and safetensors checkpoints.",
    commands=("repscope.cli.weights:weights",),
    sections=(
        Section("weights_barrier", "Loss barriers between two models", order=70,
                render=_R + "render_barrier",
                description="The loss of (1 - alpha) A + alpha B along the linear path between "
                "two models, minus the straight line between the two end losses; the barrier "
                "is its maximum. One curve per pair: as trained ('naive') and after aligning B's "
                "hidden units to A's (weight matching), which removes the barrier when the "
                "models are linearly mode connected up to permutation."),
        Section("weights_layer_barrier", "Layer-wise barriers", order=71,
                render=_R + "render_layer_barrier",
                description="The barrier when only one block (a layer's weight and bias) moves "
                "from A to B and every other tensor stays at A."),
        Section("weights_alignment", "What permutation alignment changed", order=72,
                render=_R + "render_weights_alignment",
                description="Per weight matrix: the L2 distance ratio after/before alignment "
                "(weight matching barely shrinks it), the singular values (unchanged by a "
                "permutation), the sigma-weighted alignment of the top singular vectors (what "
                "weight matching raises), and activation statistics when data was given."),
        Section("weights_task_vectors", "Task vectors", order=73,
                render=_R + "render_task_vectors",
                description="Task vectors (fine-tuned minus base weights): their cosines, "
                "norms, and how often their signs conflict, the interference merges fight."),
        Section("weights_merge", "Merged models", order=74, render=_R + "render_merge",
                description="Each merge method's one model on every task's held-out data, beside "
                "the task's own fine-tune and the base."),
        Section("weights_atlas", "Learned task-vector coefficients (aTLAS)", order=75,
                render=_R + "render_atlas",
                description="Block-wise coefficients of each task vector, learned on a small "
                "labelled set, against the best single coefficient of a grid (held out)."),
        Section("weights_redundancy", "Redundant units", order=76,
                render=_R + "render_redundancy",
                description="Iterative merging of functionally equivalent ReLU units (positive "
                "rescalings of one another), with the network's accuracy before and after and "
                "the number of units left as the threshold grows."),
    ),
    demo=(
        DemoStep("weights", order=70, run="repscope.weights._demo:demo_weights_step",
                 summary="two digits MLPs: barrier before/after weight matching, merges, "
                 "redundant units", budget_s=20),
    ),
)
