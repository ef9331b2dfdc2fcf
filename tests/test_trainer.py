"""GRPO self-play correctness on a tiny randomly initialised model (built here, no download).

Loss masking, the DAPO objective recomputed independently, group integrity, zero-advantage
groups, the per-turn sample layout, config checking and checkpoint bookkeeping.
"""

import itertools
import os
from pathlib import Path

import pytest
import torch

from negotiation_env.judges import AgreementDecision, Judgement
from tests.scripts.tiny import always_agree
from tests.scripts.tiny import tiny_config as make_config
from trainers.common import (
    checkpoints,
    grpo_arguments,
    latest_complete_checkpoint,
    mark_complete,
    remove_incomplete_checkpoints,
    rotate_checkpoints,
    write_samples,
)
from trainers.config import TrainConfig
from trainers.rollout import DialogueOutcome, TurnSample, to_grpo_samples
from trainers.selfplay import build_trainer, save_final

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
SCENARIOS = ["pro-001/cost_vs_quality", "int-010/privacy_vs_safety"]


class CountingJudge:
    """Test double: scores 1, 2, 3, ... in call order (distinct rewards within every group)."""

    name = "counting"

    def __init__(self, constant=None):
        self.counter = itertools.count(1)
        self.constant = constant

    def score_batch(self, requests):
        return [
            Judgement(
                self.constant if self.constant is not None else float(next(self.counter)), self.name
            )
            for _ in requests
        ]


def tiny_config(model_dir, tmp_path, **changes):
    return make_config(model_dir, tmp_path / "run", **changes)


def generation_batch(config):
    per_scenario = config.rollout.group_size * config.samples_per_dialogue()
    return [{"prompt": s} for s in SCENARIOS for _ in range(per_scenario)]


def prepared(trainer, config):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer._generate_and_score_completions(generation_batch(config))


def assert_sampling_logprobs_are_the_real_ones(trainer, inputs):
    """The log-probabilities recorded at sampling time equal TRL's own recomputation on every
    token in the loss."""
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            inputs["completion_ids"].size(1),
        )[0]
    assert torch.allclose(logps * mask, inputs["sampling_per_token_logps"] * mask, atol=1e-4)


def test_turns_per_dialogue_follows_seats_and_first_speaker():
    assert TrainConfig().turns_per_dialogue() == 4  # 7 turns, negotiator_0 opens
    assert TrainConfig.from_dict({"rollout": {"seats": "full"}}).turns_per_dialogue() == 7
    assert (
        TrainConfig.from_dict({"env": {"first_speaker": "negotiator_1"}}).turns_per_dialogue() == 3
    )


def test_unknown_or_mistyped_settings_name_the_key():
    with pytest.raises(ValueError, match="unknown key rollout.group"):
        TrainConfig.from_dict({"rollout": {"group": 3}})
    with pytest.raises(ValueError, match="optim.*learning_rate"):
        TrainConfig.from_dict({"optim": {"learning_rate": "fast"}})
    with pytest.raises(ValueError, match="unknown section 'optimizer'"):
        TrainConfig.from_dict({"optimizer": {}})
    with pytest.raises(ValueError, match="reward.observer.*neither"):
        TrainConfig.from_dict({"reward": {"observer": "missing.yaml"}})
    with pytest.raises(ValueError, match="rollout.seats"):
        TrainConfig.from_dict({"rollout": {"seats": "both"}})
    with pytest.raises(ValueError, match="env.*max_turns"):
        TrainConfig.from_dict({"env": {"max_turns": 0}})
    with pytest.raises(ValueError, match="rollout.summary_no_repeat_ngram_size: must be >= 0"):
        TrainConfig.from_dict({"rollout": {"summary_no_repeat_ngram_size": -1}})


def test_server_engine_settings_are_checked_together():
    def config(**rollout):
        return TrainConfig.from_dict({"rollout": rollout})

    urls = ["http://10.0.0.5:8000/v1"]
    assert config(engine="server", servers=urls).rollout.servers == urls
    with pytest.raises(ValueError, match="rollout.engine: 'vllm' is not one of"):
        config(engine="vllm")
    with pytest.raises(ValueError, match="needs rollout.servers"):
        config(engine="server")
    with pytest.raises(ValueError, match="apply to rollout.engine: server"):
        config(servers=urls)
    with pytest.raises(ValueError, match="rollout.servers: expected a list of URLs"):
        config(engine="server", servers=[""])
    with pytest.raises(ValueError, match="servers: expected list"):
        config(engine="server", servers=urls[0])
    with pytest.raises(ValueError, match="set model.lora: true"):
        TrainConfig.from_dict(
            {"model": {"lora": False}, "rollout": {"engine": "server", "servers": urls}}
        )
    # an adapter synced every 2 steps is 1 step old; playing ahead adds one more
    with pytest.raises(ValueError, match="up to 1 steps old, more than rollout.max_staleness"):
        config(engine="server", servers=urls, sync_every=2)
    with pytest.raises(ValueError, match="up to 2 steps old"):
        config(engine="server", servers=urls, sync_every=2, max_staleness=1)
    assert config(engine="server", servers=urls, sync_every=2, max_staleness=2)
    assert config(engine="server", servers=urls, max_staleness=1)


def test_the_prompts_of_the_next_step_are_predicted_from_the_dataset_order():
    from trainers.common import Rollout

    rollout = Rollout(TrainConfig())
    # two shuffled passes of a pool of five, as scenario_dataset lays them out
    rollout.scenario_order = ["a", "b", "c", "d", "e", "c", "a", "e", "b", "d"]
    assert rollout.next_prompts(["a", "a", "b", "b"]) == ["c", "c", "d", "d"]
    assert rollout.next_prompts(["c", "c", "d", "d"]) == ["e", "e", "c", "c"]  # into pass 2
    assert rollout.next_prompts(["e", "e", "c", "c"]) == ["a", "a", "e", "e"]
    assert rollout.next_prompts(["a", "e"]) == ["b", "d"]
    assert rollout.next_prompts(["b", "d"]) is None  # the order ends: so does training
    assert rollout.next_prompts(["a", "c"]) is None  # not where the order says
    assert rollout.next_prompts(["x", "x"]) is None


def test_playing_ahead_lays_out_shuffled_passes_of_the_whole_pool():
    from negotiation_env.scenarios import ScenarioBank
    from trainers.selfplay import scenario_dataset

    def dataset(**rollout):
        values = {"rollout": rollout, "optim": {"max_steps": 10}}
        return list(
            scenario_dataset(TrainConfig.from_dict(values), ScenarioBank.default())["prompt"]
        )

    plain = dataset(scenarios_per_step=2, max_scenarios=5)
    assert len(plain) == 5
    urls = ["http://127.0.0.1:1/v1"]
    ahead = dataset(
        scenarios_per_step=2, max_scenarios=5, engine="server", servers=urls, max_staleness=1
    )
    assert len(ahead) >= 10 * 2 + 5 and len(ahead) % 5 == 0
    passes = [ahead[i : i + 5] for i in range(0, len(ahead), 5)]
    assert passes[0] == plain and all(sorted(p) == sorted(plain) for p in passes)
    assert any(p != plain for p in passes[1:])  # reshuffled, not repeated


def test_a_learning_rate_written_5e_4_is_a_float_in_yaml_and_on_the_command_line(tmp_path):
    from negotiate.train import parse_overrides

    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 5e-4\n")  # a string to YAML 1.1
    assert TrainConfig.from_yaml(path).optim.learning_rate == 5e-4
    overrides = parse_overrides(["optim.learning_rate=1E-3", "optim.max_grad_norm=.5e1"])
    config = TrainConfig.from_yaml(path, overrides)
    assert (config.optim.learning_rate, config.optim.max_grad_norm) == (1e-3, 5.0)
    with pytest.raises(ValueError, match="optim.learning_rate"):
        TrainConfig.from_yaml(path, parse_overrides(["optim.learning_rate=5e-4x"]))


def test_paper_defaults():
    config = TrainConfig()
    assert (
        config.rollout.group_size,
        config.rollout.scenarios_per_step,
        config.optim.learning_rate,
    ) == (8, 16, 5e-6)
    assert (config.optim.beta, config.optim.loss_type) == (0.0, "dapo")
    assert (
        config.rollout.temperature,
        config.rollout.top_p,
        config.rollout.summary_temperature,
        config.rollout.summary_no_repeat_ngram_size,
    ) == (0.7, 0.95, 0.1, 0)
    assert (config.env.max_turns, config.env.context_turns, config.env.mode) == (7, 2, "training")


def test_every_shipped_config_loads_and_batches_whole_dialogues_and_one_trains_the_resolution():
    configs = {
        p.name: TrainConfig.from_yaml(p)
        for p in sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    }
    assert {"cpu_smoke.yaml", "cpu_learning.yaml", "cpu_learning_resolution.yaml"} <= set(configs)
    trained = {name for name, config in configs.items() if config.rollout.train_resolution}
    assert trained == {"cpu_learning_resolution.yaml"}
    config = configs["cpu_learning_resolution.yaml"]
    assert config.rollout.summary_temperature == config.rollout.temperature
    assert config.reward.judge == "rm?adapter=ca-rm-v2"  # the judge its runs were measured with
    for name, config in configs.items():  # the trainer's own batch-shape check
        per_dialogue = config.samples_per_dialogue()
        args = grpo_arguments(config, config.rollout.group_size * per_dialogue, per_dialogue)
        assert args.per_device_train_batch_size % per_dialogue == 0, name


def test_grpo_samples_pad_each_dialogue_to_the_same_number_of_masked_slots():
    sample = TurnSample("negotiator_0", 0, [1, 2], [5, 6, 7], [-0.1, -0.2, -0.3])
    outcomes = [
        DialogueOutcome("s", 2.0, {}, [sample]),
        DialogueOutcome("s", None, {}, [sample, sample]),
    ]
    fields = to_grpo_samples(outcomes, 2, pad_token_id=0)
    assert fields["env_mask"] == [[1, 1, 1], [0], [1, 1, 1], [1, 1, 1]]
    assert fields["negotiation_reward"] == [2.0, 2.0, None, None]
    assert fields["completion_ids"][1] == [0] and fields["dialogue_index"] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="more than the 1 slots"):
        to_grpo_samples(outcomes, 1, pad_token_id=0)


def test_a_trained_resolution_is_one_more_slot_after_the_turns_masked_where_none_was_written():
    turn = TurnSample("negotiator_0", 0, [1, 2], [5, 6, 7], [-0.1, -0.2, -0.3])
    resolution = TurnSample("negotiator_1", 2, [3], [8, 9], [-0.4, -0.5])
    outcomes = [
        DialogueOutcome("s", 2.0, {}, [turn], resolution=resolution),
        DialogueOutcome("s", 0.0, {}, [turn, turn]),  # no agreement: no resolution
    ]
    fields = to_grpo_samples(outcomes, 2, pad_token_id=0, resolution_slot=True)
    assert fields["env_mask"] == [[1, 1, 1], [0], [1, 1], [1, 1, 1], [1, 1, 1], [0]]
    assert fields["completion_ids"][2] == [8, 9] and fields["prompt_ids"][2] == [3]
    assert fields["seat"][2] == "negotiator_1"
    assert fields["negotiation_reward"] == [2.0] * 3 + [0.0] * 3
    assert fields["dialogue_index"] == [0, 0, 0, 1, 1, 1]
    # without the slot the resolution is not a sample, as in the paper
    assert to_grpo_samples(outcomes, 2, pad_token_id=0)["env_mask"] == [
        [1, 1, 1],
        [0],
        [1, 1, 1],
        [1, 1, 1],
    ]


def test_training_the_resolution_needs_it_sampled_at_the_loss_temperature():
    with pytest.raises(ValueError, match=r"rollout.train_resolution: .* \(0.7\).* \(0.1\)"):
        TrainConfig.from_dict({"rollout": {"train_resolution": True}})
    config = TrainConfig.from_dict(
        {"rollout": {"train_resolution": True, "summary_temperature": 0.7}}
    )
    assert config.samples_per_dialogue() == config.turns_per_dialogue() + 1 == 5
    assert TrainConfig().samples_per_dialogue() == TrainConfig().turns_per_dialogue()


def test_a_trained_resolution_is_sampled_at_the_loss_temperature_and_recorded_in_training(
    tiny_model_dir, tmp_path
):
    config = tiny_config(
        tiny_model_dir,
        tmp_path,
        **{
            "env.mode": "evaluation",
            "rollout.train_resolution": True,
            "rollout.summary_temperature": 0.7,
        },
    )
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    inputs = prepared(trainer, config)
    tokenizer = trainer.processing_class
    for outcome in trainer.rollout.last.outcomes:
        assert outcome.resolution is not None
        assert "resolution" in tokenizer.decode(outcome.resolution.prompt_ids).lower()
    # every dialogue: its one turn of seat 0, one masked slot, its resolution (in the loss)
    mask = (inputs["completion_mask"] * inputs["tool_mask"]).sum(1).tolist()
    assert [m > 0 for m in mask] == [True, False, True] * 4
    assert_sampling_logprobs_are_the_real_ones(trainer, inputs)


def test_group_shares_one_scenario_and_samples_are_exactly_the_sampled_turns(
    tiny_model_dir, tmp_path
):
    config = tiny_config(tiny_model_dir, tmp_path, **{"env.mode": "evaluation"})
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    inputs = prepared(trainer, config)
    rollout = trainer.rollout
    outcomes = rollout.last.outcomes
    assert [o.scenario_id for o in outcomes] == [SCENARIOS[0]] * 2 + [SCENARIOS[1]] * 2
    # every trained sample's prompt is the observation that turn was sampled from
    for outcome in outcomes:
        assert [s.seat for s in outcome.samples] == [
            "negotiator_0"
        ]  # agreement after turn 2: one turn of seat 0
        tokenizer = trainer.processing_class
        prompt_text = tokenizer.decode(outcome.samples[0].prompt_ids)
        assert (
            outcome.info["transcript"][0]["text"] not in prompt_text
        )  # the turn itself is the completion
        assert "Dilemma:" in prompt_text and "You speak first" in prompt_text
    assert_sampling_logprobs_are_the_real_ones(trainer, inputs)


def test_masked_tokens_get_exactly_zero_gradient_and_loss_matches_dapo(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, **{"env.mode": "evaluation"})
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    inputs = prepared(trainer, config)
    mask = (inputs["completion_mask"] * inputs["tool_mask"]).float()
    assert (mask.sum(1) == 0).any() and (mask.sum(1) > 0).any()  # padded slots and real turns

    captured = {}
    original = trainer._get_per_token_logps_and_entropies

    def recording(*args, **kwargs):  # keep TRL's per-token log-probabilities to read their gradient
        logps, *rest = original(*args, **kwargs)
        logps.retain_grad()
        captured["logps"] = logps
        return (logps, *rest)

    trainer._get_per_token_logps_and_entropies = recording
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    trainer._get_per_token_logps_and_entropies = original
    token_grad = captured["logps"].grad  # d loss / d log p(token), per completion token
    assert torch.all(token_grad[mask == 0] == 0), "a masked token received gradient"
    assert token_grad[mask == 1].abs().sum() > 0
    trained_grads = {
        n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None
    }

    # An independent computation of the DAPO objective on the same tensors (on-policy, beta=0):
    # L = -sum_i sum_t min(r A_i, clip(r) A_i) m_it / sum m, with r = exp(logp - logp.detach()) = 1.
    rewards = torch.tensor(
        [
            r if r is not None else float("nan")
            for r in [
                *[
                    o.reward
                    for o in trainer.rollout.last.outcomes
                    for _ in range(config.turns_per_dialogue())
                ]
            ]
        ]
    )
    groups = rewards.view(-1, config.rollout.group_size * config.turns_per_dialogue())
    advantages = (
        (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
    ).flatten()
    assert torch.allclose(advantages, inputs["advantages"], atol=1e-5)
    trainer.model.zero_grad()
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    width = inputs["completion_ids"].size(1)
    logits = (
        trainer.model(input_ids=ids, attention_mask=attention).logits[:, -width - 1 : -1].float()
    )
    logps = (
        torch.log_softmax(logits / config.rollout.temperature, -1)
        .gather(-1, inputs["completion_ids"][..., None])
        .squeeze(-1)
    )
    ratio = torch.exp(logps - logps.detach())
    per_token = -torch.min(
        ratio * advantages[:, None], torch.clamp(ratio, 0.8, 1.2) * advantages[:, None]
    )
    reference = (per_token * mask).sum() / mask.sum()
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    for name, parameter in trainer.model.named_parameters():
        if parameter.grad is not None:
            assert torch.allclose(parameter.grad, trained_grads[name], atol=1e-5), name


def test_a_group_with_equal_rewards_contributes_zero_advantage(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, **{"env.mode": "evaluation"})
    trainer = build_trainer(
        config, judge=CountingJudge(constant=3.0), agreement_detector=always_agree
    )
    inputs = prepared(trainer, config)
    assert torch.all(inputs["advantages"] == 0)
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, inputs).backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in trainer.model.parameters())


def test_no_agreement_in_training_gives_zero_reward_but_stays_in_the_group(
    tiny_model_dir, tmp_path
):
    config = tiny_config(
        tiny_model_dir, tmp_path
    )  # training mode, marker detector: random text never agrees
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=None)
    inputs = prepared(trainer, config)
    outcomes = trainer.rollout.last.outcomes
    assert all(
        o.reward == 0.0 and not o.info["agreement"] and o.info["resolution"] is None
        for o in outcomes
    )
    assert inputs["advantages"].numel() == len(generation_batch(config))


def test_full_self_play_trains_both_seats_under_their_own_prompts(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir,
        tmp_path,
        **{
            "rollout.seats": "full",
            "env.mode": "evaluation",
            "rollout.per_seat_normalization": True,
        },
    )
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    prepared(trainer, config)
    for outcome in trainer.rollout.last.outcomes:
        assert [s.seat for s in outcome.samples] == ["negotiator_0", "negotiator_1"]
        names = [trainer.processing_class.decode(s.prompt_ids) for s in outcome.samples]
        a, b = (outcome.info["transcript"][i]["speaker_name"] for i in (0, 1))
        assert f"You are {a}" in names[0] and f"You are {b}" in names[1]


def test_checkpoint_bookkeeping(tmp_path):
    for step in (1, 2, 3, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (1, 2, 3):
        mark_complete(tmp_path / f"checkpoint-{step}", step)
    assert latest_complete_checkpoint(tmp_path).name == "checkpoint-3"
    assert [p.name for p in remove_incomplete_checkpoints(tmp_path)] == ["checkpoint-4"]
    rotate_checkpoints(tmp_path, keep=2)
    assert [(s, done) for s, _, done in checkpoints(tmp_path)] == [(2, True), (3, True)]


class RudeUnlessModeratedBackend:
    """Test double for a policy backend: insults its partner unless the observer's moderator
    note is in the prompt (``always_rude`` ignores the note too). Token ids are the bytes
    of the text, log-probabilities a constant. Its polite turn proposes a plan in the words
    of ``topic`` (so it stays on the dilemma)."""

    name = "rude-double"

    def __init__(self, topic, always_rude=False):
        self.topic = topic
        self.always_rude = always_rude

    def generate(self, conversations, settings):
        from llm.interface import Generation

        generations = []
        for conversation in conversations:
            last = conversation[-1]["content"]
            if "(Moderator:" in last and not self.always_rude:
                text = f"I propose we try this for a month and then review: {self.topic}"
            elif "summary" in last.lower() or "resolution" in last.lower():
                text = "Pilot the cheaper option for a month, then review quality together."
            else:
                text = "That is a ridiculous idea and you are an idiot for suggesting it."
            ids = list(text.encode())
            generations.append(Generation(text, "stop", ids, [-0.5] * len(ids), list(range(4))))
        return generations


def never_agree(scenario, transcript):
    """Test double: the parties never agree (the dialogue runs all its turns)."""
    return AgreementDecision(False, 0.0, "never")


@pytest.mark.parametrize("always_rude", [False, True])
def test_observer_in_training_replaces_blocked_turns_and_shapes_the_reward(always_rude):
    from llm.interface import GenerationSettings
    from negotiation_env import NegotiationConfig
    from negotiation_env.scenarios import ScenarioBank
    from negotiation_env.vector import VectorNegotiationEnv
    from trainers.rollout import play_dialogues
    from trainers.selfplay import dialogue_stats, load_observer

    env = VectorNegotiationEnv(
        config=NegotiationConfig(mode="evaluation", max_turns=2),
        judge=CountingJudge(constant=3.0),
        agreement_detector=never_agree,
        observer=load_observer("default", 0.5),
    )
    settings = GenerationSettings(max_new_tokens=16)
    dilemma = ScenarioBank.default().get(SCENARIOS[0]).dilemma.text
    outcomes, _ = play_dialogues(
        RudeUnlessModeratedBackend(" ".join(dilemma.split()[:20]), always_rude),
        env,
        [SCENARIOS[0]] * 2,
        settings,
        settings,
        ("negotiator_0",),
    )
    for outcome in outcomes:
        observed = outcome.info["observer"]
        blocked = [i for i in observed["interventions"] if i["kind"] == "blocked"]
        assert blocked and blocked[0]["speaker"] == "negotiator_0"
        # one sample per turn of the trained seat: the blocked attempt was replaced
        assert [s.turn for s in outcome.samples] == [0]
        sent = outcome.info["transcript"][0]["text"]
        penalty = observed["penalties"].get("negotiator_0", 0.0)
        if always_rude:  # regenerations ran out: the fallback was sent, with a penalty
            assert "idiot" not in sent and penalty > 0
            assert outcome.reward == pytest.approx(3.0 - penalty)
        else:  # the moderated retry was sent and is what the sample trains
            assert bytes(outcome.samples[0].completion_ids).decode() == sent
            assert penalty == 0 and outcome.reward == 3.0
    stats = dialogue_stats(outcomes, 2)
    assert stats["negotiation/observer_violations"] >= 1
    assert stats["negotiation/observer_interventions"] >= 1


def test_the_bf16_path_trains_a_fp32_adapter_on_bf16_weights_on_cpu(tiny_model_dir, tmp_path):
    # configs/gpu_8b.yaml's precision (bf16 weights, bf16 autocast), here on the CPU
    config = tiny_config(
        tiny_model_dir,
        tmp_path,
        **{
            "env.mode": "evaluation",
            "model.dtype": "bfloat16",
            "model.lora": True,
            "optim.bf16": True,
        },
    )
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    adapter = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad
    }
    frozen = [p for p in trainer.model.parameters() if not p.requires_grad]
    assert adapter and all(p.dtype == torch.float32 for p in adapter.values())
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[n], before) for n, before in adapter.items())
    assert all(torch.isfinite(after[n]).all() for n in adapter)


def test_samples_are_replaced_atomically(tmp_path):
    outcome = DialogueOutcome(
        "pro-001/cost_vs_quality",
        2.5,
        {
            "agreement": True,
            "transcript": [{"speaker_name": "Ana", "text": "Hi"}],
            "resolution": "R",
        },
    )
    write_samples(tmp_path, 3, [outcome], 1)
    files = [tmp_path / "samples" / f"step_000003.{ext}" for ext in ("txt", "jsonl")]
    inodes = [path.stat().st_ino for path in files]
    write_samples(tmp_path, 3, [outcome], 1)
    assert [path.stat().st_ino for path in files] != inodes  # new files renamed in
    assert "[Ana] Hi" in files[0].read_text() and '"reward": 2.5' in files[1].read_text()
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == sorted(p.name for p in files)


class SavingTrainer:
    """Test double of what save_final uses of a trainer: it writes ``weights`` into the
    folder it is given, or writes half of them and fails, as a killed save would."""

    def __init__(self, weights: str, fail: bool = False):
        self.weights, self.fail = weights, fail
        self.processing_class = self

    def is_world_process_zero(self) -> bool:
        return True

    def save_model(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "adapter_model.safetensors"), "w") as handle:
            handle.write(self.weights[: len(self.weights) // 2] if self.fail else self.weights)
        if self.fail:
            raise OSError("killed while saving")

    def save_pretrained(self, path: str) -> None:
        with open(os.path.join(path, "tokenizer.json"), "w") as handle:
            handle.write("{}")


def test_the_final_model_is_replaced_atomically(tmp_path):
    final = tmp_path / "final"
    save_final(SavingTrainer("first run"), final)
    with pytest.raises(OSError, match="killed"):
        save_final(SavingTrainer("second run", fail=True), final)
    assert (final / "adapter_model.safetensors").read_text() == "first run"  # still whole
    save_final(SavingTrainer("third run"), final)
    assert (final / "adapter_model.safetensors").read_text() == "third run"
    assert (final / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no staging left


class CutOffBackend:
    """Test double for a policy backend: every dialogue turn and the resolution run into the
    token limit after one complete sentence. Token ids are the bytes of the text."""

    name = "cut-off-double"

    class tokenizer:  # noqa: N801 - stands in for the backend's tokenizer
        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return bytes(ids).decode()

    TURN = "We split the rent evenly. And then the"

    def generate(self, conversations, settings):
        from llm.interface import Generation

        generations = []
        for conversation in conversations:
            summary = "resolution" in conversation[-1]["content"].lower()
            text = "Split the rent. Kim pays" if summary else self.TURN
            ids = list(text.encode())
            logprobs = [-0.01 * (i + 1) for i in range(len(ids))]
            generations.append(Generation(text, "length", ids, logprobs, prompt_token_ids=[1, 2]))
        return generations


@pytest.mark.parametrize("policy", ["sentence", "keep"])
def test_cut_turns_are_ended_after_a_sentence_in_text_and_trained_tokens(policy):
    from llm.interface import GenerationSettings
    from negotiation_env import NegotiationConfig
    from negotiation_env.vector import VectorNegotiationEnv
    from trainers.rollout import play_dialogues
    from trainers.selfplay import dialogue_stats

    env = VectorNegotiationEnv(
        config=NegotiationConfig(mode="evaluation", max_turns=2),
        judge=CountingJudge(constant=3.0),
        agreement_detector=never_agree,
    )
    settings = GenerationSettings(max_new_tokens=16)
    outcomes, _ = play_dialogues(
        CutOffBackend(), env, [SCENARIOS[0]], settings, settings, ("negotiator_0",), policy
    )
    (outcome,) = outcomes
    kept = "We split the rent evenly." if policy == "sentence" else CutOffBackend.TURN
    assert [t["text"] for t in outcome.info["transcript"]] == [kept, kept]
    resolution = "Split the rent." if policy == "sentence" else "Split the rent. Kim pays"
    assert outcome.info["resolution"] == resolution
    (sample,) = outcome.samples
    assert bytes(sample.completion_ids).decode() == kept
    assert sample.logprobs == [-0.01 * (i + 1) for i in range(len(kept))]
    assert (outcome.turns, outcome.clipped_turns) == (2, 2)
    assert dialogue_stats(outcomes, 1)["negotiation/clipped_turn_fraction"] == 1.0


def test_a_trained_resolution_keeps_the_tokens_of_the_text_that_was_judged():
    from llm.interface import GenerationSettings
    from negotiation_env import NegotiationConfig
    from negotiation_env.vector import VectorNegotiationEnv
    from trainers.rollout import play_dialogues

    env = VectorNegotiationEnv(
        config=NegotiationConfig(mode="evaluation", max_turns=2),
        judge=CountingJudge(constant=3.0),
        agreement_detector=never_agree,
    )
    settings = GenerationSettings(max_new_tokens=16)
    played = [
        play_dialogues(
            CutOffBackend(),
            env,
            [SCENARIOS[0]],
            settings,
            settings,
            ("negotiator_0",),
            "sentence",
            train,
        )[0][0]
        for train in (True, False)
    ]
    assert played[1].resolution is None  # the paper's default: not a sample
    outcome = played[0]
    assert outcome.info["resolution"] == "Split the rent."
    assert bytes(outcome.resolution.completion_ids).decode() == "Split the rent."
    assert len(outcome.resolution.logprobs) == len(outcome.resolution.completion_ids)
    assert len(outcome.samples) == 1  # the dialogue turns are as before
