"""The judges' agreement with the gold set ships with the package, and is read only when it is current."""

from __future__ import annotations

import json

import pytest

from latentguard.evaluation.gold import load_gold
from latentguard.evaluation.judge_features import PairFeatures
from latentguard.evaluation.judges import BEST_CANDIDATES, DEFAULT_JUDGES, load_bank, make_judge
from latentguard.evaluation.validation import SHIPPED_AGREEMENT, agreement_key, gold_agreement, split_list


def test_the_shipped_figures_are_those_of_the_current_judges_on_the_shipped_gold_set():
    rows = load_gold(None, "dev")
    features, bank = PairFeatures(), load_bank()
    names = dict.fromkeys([*split_list(DEFAULT_JUDGES), *BEST_CANDIDATES])
    keys = {agreement_key(make_judge(name, features, bank), rows) for name in names} - {None}
    shipped = {p.stem for p in SHIPPED_AGREEMENT.glob("*.json")}
    assert shipped == keys, "rerun tools/ship_judge_agreement.py after refitting a judge or changing the gold set"


def test_a_shipped_figure_is_read_without_judging_and_another_gold_set_is_judged(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTGUARD_CACHE", str(tmp_path))
    rows = load_gold(None, "dev")
    judge = make_judge("refusal")
    computed = gold_agreement([judge], rows[:50])["refusal"]  # not shipped: judged, then cached
    assert computed["refused"]["n"] == 50 and list(tmp_path.rglob("*.json"))

    def unused(prompts, texts):
        raise AssertionError("the shipped figure should have been read")

    monkeypatch.setattr(judge, "judge", unused)
    shipped = SHIPPED_AGREEMENT / f"{agreement_key(judge, rows)}.json"
    assert gold_agreement([judge], rows)["refusal"] == json.loads(shipped.read_text())
    with pytest.raises(AssertionError, match="shipped figure"):
        gold_agreement([judge], rows[:40])
