"""The shipped data set: size, coverage, split and distinctness."""

from collections import Counter

from negotiation_env.scenarios import CATEGORIES, find_near_duplicates
from negotiation_env.scenarios.generation import check_dilemma_quality


def test_at_least_300_dilemmas_and_100_per_category(bank):
    dilemmas = bank.dilemmas()
    assert len(dilemmas) >= 300
    counts = Counter(d.category for d in dilemmas)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 100


def test_test_split_has_at_least_60_dilemmas_disjoint_from_train(bank):
    train_ids = {d.id for d in bank.dilemmas("train")}
    test_ids = {d.id for d in bank.dilemmas("test")}
    assert len(test_ids) >= 60
    assert not train_ids & test_ids
    assert len(train_ids) + len(test_ids) == len(bank.dilemmas())
    # every category is represented in the test split
    assert {d.category for d in bank.dilemmas("test")} == set(CATEGORIES)


def test_persona_pairs_cover_distinct_tensions_and_hold_out_eight(bank):
    train, test = bank.pairs("train"), bank.pairs("test")
    assert len(train) >= 25
    assert len(test) >= 8
    tensions = [p.tension.lower() for p in train + test]
    assert len(set(tensions)) == len(tensions)
    for required in (
        "cost vs quality",
        "privacy vs safety",
        "tradition vs innovation",
        "speed vs thoroughness",
    ):
        assert required in tensions
    held_out_personas = {p.persona_a.id for p in test} | {p.persona_b.id for p in test}
    train_personas = {p.persona_a.id for p in train} | {p.persona_b.id for p in train}
    assert not held_out_personas & train_personas


def test_no_near_duplicate_dilemmas(bank):
    duplicates = find_near_duplicates((d.id, f"{d.title} {d.text}") for d in bank.dilemmas())
    assert duplicates == [], "\n".join(map(str, duplicates))


def test_every_dilemma_states_a_decision_of_sensible_length(bank):
    problems = {d.id: check_dilemma_quality(d) for d in bank.dilemmas()}
    assert {k: v for k, v in problems.items() if v} == {}


def test_titles_and_persona_names_are_unique(bank):
    titles = [d.title.lower() for d in bank.dilemmas()]
    assert len(set(titles)) == len(titles)
    names = [p.name for p in bank.personas()]
    assert len(set(names)) == len(names)
    assert all(len(p.core_values) >= 3 for p in bank.personas())


def test_scenario_ids_round_trip(bank):
    for scenario in bank.scenarios("test")[:50]:
        assert bank.get(scenario.id) == scenario
    assert bank.count("train") == len(bank.dilemmas("train")) * len(bank.pairs("train"))
