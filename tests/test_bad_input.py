"""Bad input and interrupts, tried as a new user would: each is one line ``error: ...`` (exit 2) or
``interrupted: ...`` (exit 130) naming the value and the fix, and a failed run leaves nothing that
blocks the next one."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from latentguard.agents.base import Method, Rollout, RunContext
from latentguard.agents.registry import make_method
from latentguard.cli import evaluate as evaluate_cli
from latentguard.cli import train as train_cli
from latentguard.evaluation.runner import EvalConfig, run_evaluation

RUN = ["--model", "tiny", "--guard", "keyword", "--prompts", "default", "--limit", "2", "--max-new-tokens", "4",
       "--judge", "refusal", "--progress", "false"]


def evaluate(capsys, *args: str) -> tuple[int, str]:
    code = evaluate_cli.main([*RUN, *args])
    return code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


class Interrupting(Method):
    """A method plug-in that stands for a user pressing Ctrl-C mid-run."""

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        raise KeyboardInterrupt


class OnePerPrompt(Method):
    """A method plug-in that tells the run about each answer as it finishes."""

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        out = []
        for p in prompts:
            out.append(Rollout(p, "ok", 1, 1, 0.0))
            ctx.answered()
        return out


def test_a_garbage_critic_file_is_named_before_anything_is_written(tmp_path, capsys):
    critic = tmp_path / "critic"
    critic.mkdir()
    (critic / "critic.json").write_text(json.dumps({"model_id": "tiny", "layer": 1, "pooling": "mean", "latent_size": 64}))
    (critic / "critic.safetensors").write_bytes(b"not a safetensors file")
    code, err = evaluate(capsys, "--methods", f"critic-search:critic={critic}", "--out", str(tmp_path / "run"))
    line = one_line_error(err)
    assert code == 2 and "critic.safetensors" in line and "damaged" in line and "train.py critic" in line
    assert not (tmp_path / "run").exists()


def test_a_probe_for_another_model_is_refused_before_anything_is_written(tmp_path, capsys):
    from latentguard.guards.pretrained import load_pretrained
    from latentguard.lm import DEFAULT_MODEL

    load_pretrained(DEFAULT_MODEL, "latent-probe").save(tmp_path / "probe")  # hidden size 576, not tiny's 64
    code, err = evaluate_cli.main([*RUN[:2], "--guard", f"latent-probe:{tmp_path / 'probe'}", *RUN[4:], "--methods",
                                   "vanilla", "--out", str(tmp_path / "run")]), capsys.readouterr().err
    line = one_line_error(err)
    assert code == 2 and f"trained on model {DEFAULT_MODEL!r}, not 'tiny'" in line and "train.py guard" in line
    assert not (tmp_path / "run").exists()


def test_a_config_left_by_a_failed_run_does_not_block_the_next(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": "tiny", "max_new_tokens": 99, "files": {"guard": "x"}}))
    code, err = evaluate(capsys, "--methods", "vanilla", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["max_new_tokens"] == 4
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, err = evaluate(capsys, "--methods", "vanilla", "--out", str(tmp_path / "afile"))
    assert code == 2 and "is a file, not a folder" in one_line_error(err)


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, err = evaluate(capsys, "--methods", "vanilla", "--out", str(tmp_path / "afile" / "run"))
    line = one_line_error(err)
    assert code == 2 and "cannot write to --out" in line and "give a folder you can write to" in line


def test_a_corrupt_probe_safetensors_is_one_line(tmp_path, capsys):
    from latentguard.guards.pretrained import load_pretrained
    from latentguard.lm import DEFAULT_MODEL

    load_pretrained(DEFAULT_MODEL, "latent-probe").save(tmp_path / "probe")
    (tmp_path / "probe" / "probe.safetensors").write_bytes(b"\x00" * 10)
    code, err = evaluate_cli.main([*RUN[:2], "--guard", f"latent-probe:{tmp_path / 'probe'}", *RUN[4:], "--methods",
                                   "vanilla", "--out", str(tmp_path / "run")]), capsys.readouterr().err
    line = one_line_error(err)
    assert code == 2 and "probe.safetensors" in line and "train.py guard" in line


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path, capsys):
    code, err = evaluate(capsys, "--methods", "vanilla,tests.test_bad_input:Interrupting", "--out",
                         str(tmp_path / "run"), "--chunk", "2")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 130 and len(lines) == 1 and lines[0].startswith("interrupted: ")
    assert "run/samples.jsonl" in lines[0] and "run the same command again to resume" in lines[0]
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 2  # vanilla's chunk was kept


def test_ctrl_c_in_a_training_command_names_its_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setitem(train_cli.COMMANDS, "critic", (train_cli.COMMANDS["critic"][0], interrupted))
    assert train_cli.main(["critic", "--out", str(tmp_path / "critic")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted: the last checkpoint (one per epoch) is in {tmp_path / 'critic'}-checkpoint; "
                   "run the same command again to resume from it")


@pytest.mark.parametrize(("spec", "message"), [
    ("care:b=abc", "method 'care': option b='abc' must be a whole number ('care:b=abc'); options: b=40, N=5"),
    ("care:nosuch=1", "method 'care' has no option 'nosuch' ('care:nosuch=1'); its options: b=40, N=5"),
    ("critic-search:safe_threshold=high", "method 'critic-search': option safe_threshold='high' must be a number"),
    ("care:show_critique=maybe", "option show_critique='maybe' must be true or false"),
])
def test_method_option_errors_name_the_method_option_and_valid_options(spec, message):
    with pytest.raises(ValueError) as err:
        make_method(spec)
    assert message in str(err.value)


def test_an_unimportable_plugin_says_how_to_make_it_importable(tmp_path, capsys):
    code, err = evaluate(capsys, "--methods", "vanilla", "--guard", "mymodule:fn", "--out", str(tmp_path / "run"))
    line = one_line_error(err)
    assert code == 2 and "cannot import module 'mymodule'" in line and "PYTHONPATH=." in line


def test_evaluate_takes_a_task_reward(tmp_path):
    from latentguard.rewards import CoherenceReward

    report = run_evaluation(EvalConfig(model="tiny", guard="keyword", prompts="default", limit=2, max_new_tokens=4,
                                       methods="vanilla", judge="refusal", reward="coherence", progress=False,
                                       out=str(tmp_path / "run")))
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    want = CoherenceReward()([r["prompt"] for r in rows], [r["text"] for r in rows])
    assert [r["reward"] for r in rows] == pytest.approx(list(want))
    assert "reward (coherence)" in (tmp_path / "run" / "report.md").read_text()
    assert report["config"]["reward"] == "coherence"


def test_a_budget_no_method_uses_is_refused():
    with pytest.raises(ValueError, match="--budget 2 applies to the methods that keep a safety state"):
        run_evaluation(EvalConfig(model="tiny", guard="keyword", methods="vanilla", budget=2.0, progress=False))


def test_a_budget_both_given_and_different_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sets budget=1 but the run's --budget is 2"):
        run_evaluation(EvalConfig(model="tiny", guard="keyword", methods="beam-saute:budget=1", budget=2.0,
                                  out=str(tmp_path / "run"), progress=False))


def test_a_plot_with_nothing_to_show_says_so(tmp_path):
    report = run_evaluation(EvalConfig(model="tiny", guard="keyword", prompts="benign:dev", limit=2, max_new_tokens=4,
                                       methods="vanilla", judge="refusal", progress=False, out=str(tmp_path / "run")))
    note = next(n for n in report["notes"] if n.startswith("safety_quality.png is empty"))
    assert "vanilla on benign:dev (it has no harmful prompts)" in note
    assert "safety_quality.png is empty" in (tmp_path / "run" / "report.md").read_text()


def test_progress_moves_per_prompt(tmp_path, monkeypatch):
    import latentguard.evaluation.runner as runner

    updates: list[int] = []

    class Bar:
        def __init__(self, **kwargs):
            pass

        def update(self, n):
            updates.append(n)

        def set_postfix_str(self, text):
            pass

        def close(self):
            pass

    monkeypatch.setattr(runner, "tqdm", Bar)
    run_evaluation(EvalConfig(model="tiny", guard="keyword", prompts="default", limit=3, max_new_tokens=4,
                              methods="tests.test_bad_input:OnePerPrompt", judge="refusal", chunk=6,
                              out=str(tmp_path / "run")))
    assert [n for n in updates if n] == [1] * 3  # not one update of 3 for the chunk


def test_sampling_reports_every_answer_once(tiny_lm):
    seen: list[int] = []
    ctx = RunContext(tiny_lm, None, None, max_new_tokens=6, on_answers=seen.append)
    make_method("vanilla").run(["Name a fruit.", "Say hi.", "Count to three."], ctx)
    assert sum(seen) == 3
