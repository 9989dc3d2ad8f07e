"""Ship the agreement of the default and `best` candidate judges with the shipped gold set.

    python tools/ship_judge_agreement.py

Every report prints its judges' agreement with the gold dev split; computing it reads every gold
answer once (about two minutes on 2 CPU cores), which a first ``make demo`` would otherwise pay.
This writes the figures of the shipped judges into ``latentguard/evaluation/data/judge_agreement/``
under the keys :func:`latentguard.evaluation.validation.gold_agreement` looks up (the gold rows'
content and each judge's fingerprint), and removes the files no current judge has; rerun it after
refitting a judge or changing the gold set (a test fails until then).
"""

from __future__ import annotations

from latentguard.common.storage import atomic_write_json
from latentguard.evaluation.gold import judge_agreement, load_gold
from latentguard.evaluation.judge_features import PairFeatures
from latentguard.evaluation.judges import BEST_CANDIDATES, DEFAULT_JUDGES, load_bank, make_judge
from latentguard.evaluation.validation import SHIPPED_AGREEMENT, agreement_key, split_list


def shipped_judges():
    """The judges whose figures are shipped: the default ones and the `best` candidates."""
    features, bank = PairFeatures(), load_bank()
    names = dict.fromkeys([*split_list(DEFAULT_JUDGES), *BEST_CANDIDATES])
    return [make_judge(name, features, bank) for name in names]


def main() -> None:
    rows = load_gold(None, "dev")
    prompts, texts = [r.prompt for r in rows], [r.text for r in rows]
    SHIPPED_AGREEMENT.mkdir(parents=True, exist_ok=True)
    kept = set()
    for judge in shipped_judges():
        key = agreement_key(judge, rows)
        if key is None:
            continue
        kept.add(f"{key}.json")
        atomic_write_json(SHIPPED_AGREEMENT / f"{key}.json", judge_agreement(judge.judge(prompts, texts).as_dict(), rows))
        print(f"{judge.name}: {key}.json")
    for stale in SHIPPED_AGREEMENT.glob("*.json"):
        if stale.name not in kept:
            stale.unlink()
            print(f"removed {stale.name}")


if __name__ == "__main__":
    main()
