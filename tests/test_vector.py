"""The vectorized env: lockstep negotiations with batched agreement checks and judging."""

import pytest

from negotiation_env import NegotiationConfig
from negotiation_env.judges import AgreementDecision, Judgement, KeywordRubricJudge
from negotiation_env.vector import VectorNegotiationEnv

SCENARIO = "int-010/privacy_vs_safety"


class CountingDetector:
    """Test double: agreement when the latest turn says 'deal'; records each batch size."""

    name = "counting"

    def __init__(self):
        self.batches = []

    def detect_batch(self, requests):
        self.batches.append(len(requests))
        return [
            AgreementDecision("deal" in r.transcript[-1].text, 1.0, self.name) for r in requests
        ]


class CountingJudge(KeywordRubricJudge):
    """The rubric stand-in, recording each batch size."""

    def __init__(self):
        self.batches = []

    def score_batch(self, requests):
        self.batches.append(len(requests))
        return super().score_batch(requests)


def run(vec, reply):
    rounds = 0
    while not vec.done:
        vec.step({index: reply(index, observation) for index, _, observation in vec.pending()})
        rounds += 1
    return rounds


def test_agreement_checks_and_judging_are_batched_across_envs():
    detector, judge = CountingDetector(), CountingJudge()
    vec = VectorNegotiationEnv(
        config=NegotiationConfig(max_turns=4), judge=judge, agreement_detector=detector
    )
    vec.reset([SCENARIO] * 3)

    def reply(index, observation):
        if observation["phase"] == "summary":
            return "We will meet weekly and review the plan in 30 days."
        return "a deal then" if index == 0 and observation["turn"] == 1 else "let us keep talking"

    run(vec, reply)
    # turn 2 checks all three; later rounds only the two still talking
    assert detector.batches == [3, 2, 2]
    assert judge.batches == [3]  # one call, once nothing was running
    infos = vec.infos()
    assert infos[0]["agreement"] and infos[0]["rounds_to_agreement"] == 2
    assert [len(i["transcript"]) for i in infos] == [2, 4, 4]
    assert all(r > 0 for r in vec.rewards())


def test_training_mode_without_agreement_is_not_judged():
    judge = CountingJudge()
    vec = VectorNegotiationEnv(config=NegotiationConfig(mode="training", max_turns=2), judge=judge)
    vec.reset([SCENARIO, SCENARIO])
    run(vec, lambda i, o: "no")
    assert judge.batches == [] and vec.rewards() == [0.0, 0.0]


def test_group_judge_sees_each_scenario_group_together():
    groups = []

    def group_judge(requests):
        groups.append({r.scenario.id for r in requests} | {len(requests)})
        return [Judgement(float(i), "group") for i in range(len(requests))]

    vec = VectorNegotiationEnv(config=NegotiationConfig(max_turns=2), group_judge=group_judge)
    vec.reset([SCENARIO, "pro-001/cost_vs_quality", SCENARIO])
    run(vec, lambda i, o: "done" if o["phase"] == "summary" else "fine")
    assert sorted(map(sorted, map(lambda g: [str(x) for x in g], groups))) == sorted(
        [sorted([SCENARIO, "2"]), sorted(["pro-001/cost_vs_quality", "1"])]
    )
    assert vec.rewards() == [0.0, 0.0, 1.0]


def test_bad_input_is_rejected():
    vec = VectorNegotiationEnv()
    with pytest.raises(ValueError, match="at least one scenario"):
        vec.reset([])
    vec.reset([SCENARIO])
    with pytest.raises(TypeError, match="must be a str"):
        vec.step({0: 7})


def test_a_fixed_number_of_envs_is_kept_by_every_reset():
    vec = VectorNegotiationEnv(3, judge=KeywordRubricJudge())
    vec.reset(seed=5)
    drawn = [n.scenario.id for n in vec.negotiations]
    assert len(drawn) == 3 and vec.num_envs == 3
    vec.reset(seed=5)
    assert [n.scenario.id for n in vec.negotiations] == drawn  # the seed replays the draw
    with pytest.raises(ValueError, match="2 scenarios for 3 envs"):
        vec.reset([SCENARIO, SCENARIO])
    assert vec.num_envs == 3


def test_without_num_envs_each_reset_sets_the_number_and_needs_scenarios():
    vec = VectorNegotiationEnv(judge=KeywordRubricJudge())
    with pytest.raises(ValueError, match="give the scenarios"):
        vec.reset(seed=0)
    vec.reset([SCENARIO] * 2)
    assert len(vec.negotiations) == 2
    vec.reset([SCENARIO] * 4)
    assert len(vec.negotiations) == 4
