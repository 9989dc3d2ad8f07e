"""latentguard-train: the training jobs, one subcommand each.

Subcommands are registered in :data:`COMMANDS` as ``name -> (config dataclass, run function)``;
each writes TensorBoard logs and a checkpoint folder with its config; options mirror the config
fields (``python train.py guard --help``).

- ``guard``: train the latent probe (or ``--kind embedding``) on the policy's own answers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from envs.cli import add_config_args, config_from_args
from envs.guards.training import GuardTrainConfig, summary, train_guard


def run_guard(config: GuardTrainConfig) -> dict:
    """``train.py guard``: train, save, print the dev figures."""
    _, metrics = train_guard(config)
    print(summary(metrics))
    return metrics


COMMANDS: dict[str, tuple[type, Callable]] = {"guard": (GuardTrainConfig, run_guard)}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``latentguard-train``)."""
    parser = argparse.ArgumentParser(prog="latentguard-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (config_cls, _) in COMMANDS.items():
        add_config_args(sub.add_parser(name, help=(config_cls.__doc__ or "").strip().splitlines()[0]), config_cls)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    config_cls, run = COMMANDS[args.command]
    run(config_from_args(config_cls, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
