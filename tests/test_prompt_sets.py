"""The shipped request sets: held-out categories and templates, jailbreak wrapping, bad files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from latentguard.data.prompt_sets import (
    HELD_OUT_CATEGORIES,
    HELD_OUT_TEMPLATES,
    benign,
    harm,
    jailbreak,
    load_prompt_set,
    split_of,
)


def test_held_out_categories_and_templates_are_in_no_other_split():
    records = harm() + benign() + jailbreak()
    for record in records:
        held = record.harm_category in HELD_OUT_CATEGORIES or record.template in HELD_OUT_TEMPLATES
        assert (record.split == "heldout") == held
    held = [r for r in records if r.split == "heldout"]
    assert {r.harm_category for r in held if r.label == "harmful" and not r.template} == set(HELD_OUT_CATEGORIES)
    assert sum(r.lookalike for r in held) >= 4 * 20  # the look-alikes written against them


def test_a_wrapped_request_keeps_its_label_and_split_and_templates_carry_both_labels():
    wrapped = jailbreak()
    assert all(r.request in r.prompt and r.prompt != r.request for r in wrapped)
    kept = [r for r in wrapped if not r.held_out]
    assert all(r.split == split_of(r.request) for r in kept)
    labels = {}
    for r in wrapped:
        labels.setdefault(r.template, Counter())[r.label] += 1
    both = [t for t, c in labels.items() if c["harmful"] and c["benign"]]
    assert len(both) >= 0.9 * len(labels)  # a template alone says nothing about harm
    share = sum(r.label == "harmful" for r in wrapped) / len(wrapped)
    assert 0.4 <= share <= 0.65


@pytest.mark.parametrize(
    "rows,match",
    [
        ([{"prompt": "How do pipe bombs work in films?", "lookalike": True, "harm_category": "bombs"}],
         r"benign\.jsonl:1: unknown harm_category 'bombs'"),
        ([{"prompt": "Bake bread."}, {"prompt": "bake bread. "}], r"benign\.jsonl:2: duplicate request"),
    ],
)
def test_benign_file_names_bad_harm_categories_and_duplicates(tmp_path, rows, match):
    path = tmp_path / "benign.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=match):
        benign(path)


def test_heldout_names_a_split_of_the_named_sets():
    records = load_prompt_set("harm:heldout").records
    assert records and {r.category for r in records} == set(HELD_OUT_CATEGORIES)
