"""Every command's --help renders every option (a '%' in a field's doc once broke argparse's)."""

from __future__ import annotations

import dataclasses

import pytest

from latentguard.cli import evaluate, train
from latentguard.evaluation.runner import EvalConfig


@pytest.mark.parametrize("command", sorted(train.COMMANDS))
def test_every_train_command_documents_every_option(command, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main([command, "--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    config_cls = train.COMMANDS[command][0]
    missing = [f.name for f in dataclasses.fields(config_cls) if "--" + f.name.replace("_", "-") not in shown]
    assert not missing


def test_evaluate_documents_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert not [f.name for f in dataclasses.fields(EvalConfig) if "--" + f.name.replace("_", "-") not in shown]
