"""The GPICL study's grid: every `ttt-hf meta-train` run that answers its questions, written once, run many at a time.

    python -m ttt_hf.gpicl.grid list [--steps N]                       the runs and their commands
    python -m ttt_hf.gpicl.grid run --root DIR [--parallel N] [--only NAME,...] [--seed N] [--steps N] [-- flags]

The questions (docs/gpicl.md): q1, state size at one width and parameter count (TTT-Linear heads, TTT-MLP hidden
ratio, the LSTM); q2, positions that run past the trained length; q3, the transition with the number of tasks; q4,
the paper's remedies for the plateau without the convolutions (meta-batch, Adam epsilon); q5, longer meta-training
(Q5_STEPS times the recipe's steps), the first thing tried to beat the simple learners. Every run is the zoo
learners' recipe (`ttt_hf.zoo.registry`: causal convolutions, bursty sequences first, mnist-5k, 1,000 steps) with one
thing changed, except q4's, which drop the convolutions and the bursty start to test the paper's own remedies.
`--steps N` sets the recipe's length for every run but q5's, which are Q5_STEPS times it: the device call sizes the
grid to the device's speed with it, and TTT-MLP's 600 steps, a CPU budget, become N like the others'. The
seeds of the zoo learners are zoo entries (`ttt-hf zoo train NAME`); `--seed N` runs the grid with another seed,
its runs named NAME-seedN as the zoo's are. On a GPU the whole grid runs at once in one device call
(`JOB=gpicl-grid bash scripts/train_zoo_gpu.sh`); finished runs are skipped, so it resumes.
"""

import argparse
from functools import partial

from ..common.arguments import DEFAULT_SEED
from ..common.parallel import run_many
from .recipes import BURSTY, EVAL, LEARNERS

Q5_STEPS = 3  # q5: meta-training this many times longer than the recipe (the Transformer was still rising at 1,000)


def _run(
    backbone: str, extra_overrides: str = "", *flags: str, recipe: bool = True, steps: int | None = None
) -> list[str]:
    """The zoo learner's command (gpicl/recipes.py) with `extra_overrides` and `flags` added, `steps` long (default:
    the recipe's); without `recipe`, no convolutions and no bursty start (the paper's own setting)."""
    learner = LEARNERS[backbone]
    overrides = ",".join(filter(None, [learner.overrides if recipe else "", extra_overrides]))
    config = ("--config_overrides", overrides) if overrides else ()
    bursty = BURSTY if recipe else ()
    return ["meta-train", "--dataset", "mnist-5k", "--backbone", backbone, *config, *bursty, *EVAL, "--max_steps",
            str(steps or learner.steps), *flags]  # fmt: skip


def grid(steps: int | None = None) -> dict[str, list[str]]:
    """name -> the `ttt-hf` arguments of the run (the runner adds --output_dir ROOT/NAME); `steps`: the recipe's
    length for every run but q5's, which get Q5_STEPS times it (default: each learner's own, gpicl/recipes.py)."""
    runs, run = {}, partial(_run, steps=steps)
    for heads in (1, 4, 16):  # q1: TTT-Linear states 131,584 / 33,280 / 8,704 floats, parameters within 5 %
        runs[f"q1-ttt-linear-heads{heads}"] = run("ttt_linear", "", "--num_attention_heads", str(heads))
    for ratio in (1, 4, 16):  # q1: TTT-MLP states 68,096 / 267,776 / 1,066,496 (0.99 / 1.09 / 1.49 M parameters)
        runs[f"q1-ttt-mlp-hidden{ratio}"] = run("ttt_mlp", f"inner_hidden_ratio={ratio}")
    # q1: the LSTM (1,344 floats of state) at the same parameter count; it takes no convolution, the rest is the recipe
    runs["q1-lstm"] = ["meta-train", "--dataset", "mnist-5k", "--backbone", "lstm", "--hidden_size", "168", *BURSTY,
                       *EVAL, "--max_steps", str(steps or LEARNERS["ttt_linear"].steps)]  # fmt: skip
    for backbone in ("transformer", "ttt_linear"):
        name = backbone.replace("_", "-")
        runs[f"q2-{name}-no-positions"] = run(backbone, "position_embedding_type=none")
        for tasks in (16, 256, 4096, 65536, 0):  # q3: 2^4 .. 2^16 tasks, and fresh tasks (0)
            runs[f"q3-{name}-tasks{tasks or 'fresh'}"] = run(backbone, "", "--num_tasks", str(tasks))
        for batch in (128, 512, 2048):  # q4: the paper's remedies, without convolutions or bursty sequences
            for epsilon in ("1e-8", "1e-16"):
                runs[f"q4-{name}-batch{batch}-eps{epsilon}"] = run(
                    backbone, "", "--per_device_train_batch_size", str(batch), "--adam_epsilon", epsilon, recipe=False
                )
        longer = Q5_STEPS * (steps or LEARNERS[backbone].steps)  # q5: the recipe, meta-trained Q5_STEPS times longer
        runs[f"q5-{name}-steps{longer}"] = _run(backbone, steps=longer)
    return runs


def seeded(runs: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    """The runs with another seed: NAME-seedN with `--seed N` (the default seed keeps the names and commands)."""
    if seed == DEFAULT_SEED:
        return runs
    return {f"{name}-seed{seed}": [*command, "--seed", str(seed)] for name, command in runs.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m ttt_hf.gpicl.grid", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the runs and their commands")
    run = commands.add_parser("run", help="run the grid (finished runs are skipped)")
    run.add_argument("--root", required=True, help="the runs' parent folder")
    run.add_argument("--parallel", type=int, default=0, help="runs at once, one process each (0: all)")
    run.add_argument("--only", default="", help="comma-separated run names without -seedN: each is that run alone, "
                     "else the runs that start with it (q3; q1-ttt-linear-heads1,q1-ttt-linear-heads16)")  # fmt: skip
    run.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the runs' seed (other than %(default)s: "
                     "names end in -seedN)")  # fmt: skip
    for subcommand in (run, listing):
        subcommand.add_argument("--steps", type=int, default=None, help="the recipe's length for every run, TTT-MLP's "
                                f"too (default: each learner's own); q5's runs are {Q5_STEPS} times it")  # fmt: skip
    run.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags added to every run (they win over the "
                     "grid's; not --seed, --max_steps or --steps: give this command's --seed, --steps)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive number of meta-training steps, got {args.steps}.")
    runs = grid(args.steps)
    if args.command == "list":
        for name, command in runs.items():
            print(f"{name}\n    ttt-hf {' '.join(command)}")
        return runs
    extra = [flag for flag in args.extra if flag != "--"]
    given = {flag.split("=")[0].lstrip("-").replace("-", "_") for flag in extra if flag.startswith("--")}
    if "seed" in given:  # meta-train reads --max-steps as --max_steps, and so does this check
        raise ValueError("Give the seed as `grid run --seed N` (it names the runs NAME-seedN), not after --.")
    if given & {"max_steps", "steps"}:  # a --max_steps would give q5's runs the recipe's length
        raise ValueError("Give the length as `grid run --steps N` (q5's runs are that times Q5_STEPS), not after --.")
    if args.steps is not None and args.steps <= 400:  # the bursty stage ends at step 400: never a fresh sequence
        print(f"--steps {args.steps}: no longer than the bursty stage (400 steps), so a dry run, not the study.")
    names = []
    for only in args.only.split(","):
        matched = [only] if only in runs else [name for name in runs if name.startswith(only)]
        if not matched:
            raise ValueError(f"No grid run is or starts with {only!r}: `python -m ttt_hf.gpicl.grid list` names them.")
        names += matched
    chosen = seeded({name: [*runs[name], *extra] for name in dict.fromkeys(names)}, args.seed)
    codes = run_many(chosen, args.root, args.parallel)
    failed = [name for name, code in codes.items() if code]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(codes)} grid runs failed (see their .log files): {failed}")
    return codes


if __name__ == "__main__":
    main()
