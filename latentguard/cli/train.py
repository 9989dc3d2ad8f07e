"""latentguard-train: the training jobs, one subcommand each.

Subcommands are registered in :data:`COMMANDS` as ``name -> (config dataclass, run function)``;
each writes TensorBoard logs and a checkpoint folder with its config; options mirror the config
fields (``python train.py guard --help``).

- ``guard``: train the latent probe (or ``--kind embedding``) on the policy's own answers;
- ``gate``: train the request gate (a probe on the request alone that refuses before any token,
  ``critic-search:gate=request``, ``learned-care:gate=request``) on the labelled requests;
- ``collect``: base-model rollouts through the token env, for critic training (resumable shards;
  ``--ray [ADDRESS] --workers N`` spreads the shards over Ray actors, :mod:`latentguard.workers.pool`);
- ``critic``: train the latent critic on them (resumes from its last checkpoint);
- ``judge``: fit the coherence, compliance and learned judges on the gold train split;
- ``policy``: train the learned intervention policy (MaskablePPO on the decision env) that
  ``evaluate.py --methods learned-care`` runs (``--ray``: its dev evaluations on Ray actors).

``python train.py collect`` then ``python train.py critic``, with no arguments, build the default
critic for the default model in the user cache, where ``critic-search`` finds it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from latentguard.cli.config_args import OneLineParser, add_config_args, config_from_args, run_cli
from latentguard.critics.rollouts import RolloutConfig, collect_rollouts
from latentguard.critics.training import CriticTrainConfig, train_critic
from latentguard.evaluation.judge_training import JudgeTrainConfig, fit_judges
from latentguard.evaluation.judges import guard_labeler
from latentguard.training.gate_training import GateTrainConfig, train_gate
from latentguard.training.gate_training import summary as gate_summary
from latentguard.training.guard_training import GuardTrainConfig, summary, train_guard
from latentguard.training.policy_training import PolicyTrainConfig, train_policy


def run_guard(config: GuardTrainConfig) -> dict:
    """``train.py guard``: train, save, print the dev figures."""
    _, metrics = train_guard(config, labeler=guard_labeler(config.labels))
    print(summary(metrics))
    return metrics


def run_gate(config: GateTrainConfig) -> dict:
    """``train.py gate``: fit, calibrate and save the request gate, print its dev and held-out figures."""
    gate, path = train_gate(config)
    print(gate_summary(gate) + f"\n-> {path}")
    return gate.info


def run_collect(config: RolloutConfig) -> str:
    """``train.py collect``: rollouts into shards."""
    folder = collect_rollouts(config)
    print(f"rollouts in {folder}; next: python train.py critic" + (f" --model {config.model}" if config.model else ""))
    return str(folder)


def run_critic(config: CriticTrainConfig) -> dict:
    """``train.py critic``: fit, save, print the held-out figures."""
    _, report = train_critic(config)
    m = report["held_out"]
    print(f"critic: held-out safety AUROC at 8/16/32 tokens {m['auroc_8']:.3f}/{m['auroc_16']:.3f}/{m['auroc_32']:.3f}, "
          f"value MAE {m['value_mae']:.3f} ({report['data']})")
    return report


def run_judge(config: JudgeTrainConfig) -> dict:
    """``train.py judge``: fit on the gold train split, print the out-of-fold agreement."""
    bank, path = fit_judges(config)
    learned = bank["learned"]["selection"]
    print(f"judges fitted on {bank['fitted_on']['train_rows']} gold train rows -> {path}")
    for target, sel in learned.items():
        print(f"  learned/{target}: C={sel['c']}, out-of-fold accuracy {sel['oof']['accuracy']:.3f}, "
              f"kappa {sel['oof']['kappa']:.3f}")
    print(f"  coherence: out-of-fold accuracy {bank['coherence']['selection']['oof']['accuracy']:.3f}; "
          f"compliance: {bank['compliance']}")
    return bank


def run_policy(config: PolicyTrainConfig) -> dict:
    """``train.py policy``: MaskablePPO on the decision env; dev evaluations judged by ``learned``."""
    judge = guard_labeler("learned")  # the learned judge's 'harmful' verdicts (an error if it gave none)
    assert judge is not None  # None only for "refusal"
    report = train_policy(config, judge=judge)
    best = max(report["evals"], key=lambda e: e["return"])
    print(f"policy: {report['timesteps']} decisions in {report['train_seconds'] / 60:.1f} min; best dev return "
          f"{best['return']:.3f} at {best['timesteps']} (harmful {best.get('harmful_rate', float('nan')):.2f}, "
          f"wait {best['wait_tokens']:.0f} tokens)")
    return report


COMMANDS: dict[str, tuple[type, Callable]] = {
    "guard": (GuardTrainConfig, run_guard),
    "gate": (GateTrainConfig, run_gate),
    "collect": (RolloutConfig, run_collect),
    "critic": (CriticTrainConfig, run_critic),
    "judge": (JudgeTrainConfig, run_judge),
    "policy": (PolicyTrainConfig, run_policy),
}


def _resume_guard(config: GuardTrainConfig) -> str:
    return ("the policy's answers collected so far are cached (in the user cache, under answers/); run the same "
            "command again to resume: it collects only what is missing")


def _resume_collect(config: RolloutConfig) -> str:
    where = config.out or "the user cache (critics/<model>/rollouts)"
    return f"the finished shards are in {where}; run the same command again to collect only the missing ones"


def _resume_critic(config: CriticTrainConfig) -> str:
    where = f"{config.out}-checkpoint" if config.out else "the user cache (critics/<model>/critic-checkpoint)"
    return f"the last checkpoint (one per epoch) is in {where}; run the same command again to resume from it"


def _resume_policy(config: PolicyTrainConfig) -> str:
    where = config.out or "the user cache (policies/<model>/learned-care)"
    return (f"the last checkpoint (after every dev evaluation) is in {where}/checkpoint; run the same command again "
            "to resume from it")


RESUME: dict[str, Callable] = {
    "guard": _resume_guard,
    "gate": lambda config: "nothing was saved (one prefill per request: minutes); run it again",
    "collect": _resume_collect,
    "critic": _resume_critic,
    "judge": lambda config: "nothing was saved (fitting takes under a minute); run it again",
    "policy": _resume_policy,
}
"""What an interrupted command has saved, and how to resume it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``latentguard-train``)."""
    parser = OneLineParser(prog="latentguard-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (config_cls, _) in COMMANDS.items():
        add_config_args(sub.add_parser(name, help=(config_cls.__doc__ or "").strip().splitlines()[0]), config_cls)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    config_cls, run = COMMANDS[args.command]
    built: list = []

    def body() -> int:
        built.append(config_from_args(config_cls, args))
        run(built[0])
        return 0

    def interrupted() -> str:
        return RESUME[args.command](built[0]) if built else "nothing was saved"

    return run_cli(body, interrupted)


if __name__ == "__main__":
    sys.exit(main())
