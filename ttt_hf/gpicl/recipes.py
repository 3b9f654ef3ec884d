"""The zoo learners' meta-training recipe, written once: the zoo's learner entries (`ttt_hf.zoo.registry`) and the
study's grid (`ttt_hf.gpicl.grid`) derive from it.

The matched-parameter comparison (about 1 M parameters each), meta-trained on fresh tasks of mnist-5k with
`ttt-hf meta-train`'s defaults, bursty sequences first (10 base examples each until step 400) and the causal
convolutions that let them leave the plateau (docs/gpicl.md); TTT-MLP's 600 steps are what its 0.15 steps/s on one
core fit in a session.
"""

from dataclasses import dataclass

from ..common.arguments import DEFAULT_SEED

BURSTY = ("--distinct_examples", "10:400")  # bursty sequences until step 400, fresh ones after
EVAL = ("--eval_steps", "50")


@dataclass(frozen=True)
class LearnerRecipe:
    """A learner's meta-training beyond BURSTY and EVAL: config overrides, steps, and where and how long it trains."""

    overrides: str
    steps: int
    plan: str
    seeds: tuple[int, ...] = (DEFAULT_SEED, 1, 2)  # three seeds of each learner: the tables give mean and spread


LEARNERS = {  # backbone -> its recipe
    "ttt_linear": LearnerRecipe("ttt_conv_size=2", 1000, "CPU, 35 min"),
    "transformer": LearnerRecipe("ttt_conv_size=2", 1000, "CPU, 30 min"),
    "ttt_mlp": LearnerRecipe("ttt_conv_size=2", 600, "CPU, 70 min"),
}

__all__ = ["BURSTY", "EVAL", "LEARNERS", "LearnerRecipe"]
