"""GRPO self-play on negotiations: the paper's method, built on TRL's GRPOTrainer.

Each training prompt is a scenario. For it, G dialogues are played (see
:mod:`trainers.rollout`); the judge scores the resolutions; every dialogue's reward goes to
each of its trained turns; TRL normalises advantages per group and applies the DAPO loss
to the trained turns' tokens. A dialogue without agreement (training mode) ends with reward
0 and stays in its group. A dialogue whose judge failed is left out (its reward is None).

>>> from trainers import TrainConfig, train_selfplay
>>> result = train_selfplay(TrainConfig.from_yaml("configs/cpu_smoke.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from llm.interface import GenerationSettings
from negotiation_env.jsonl import write_text_atomic
from negotiation_env.vector import VectorNegotiationEnv
from trainers.common import (
    Rollout,
    grpo_arguments,
    latest_complete_checkpoint,
    load_policy,
    remove_incomplete_checkpoints,
)
from trainers.config import TrainConfig
from trainers.rollout import DialogueOutcome, RolloutStats, play_dialogues, to_grpo_samples


def scenario_dataset(config: TrainConfig, bank: Any) -> Any:
    """The training prompts: one row per scenario id of the pool, in a seeded order.

    When the rollout plays ahead (``rollout.max_staleness`` >= 1), TRL walks the dataset in
    order (so that the next step's prompts can be known), and the dataset is then one
    shuffled pass of the pool after another, as many as the run needs: every pass reaches
    every scenario, as TRL's own reshuffling would."""
    import numpy as np
    from datasets import Dataset

    pool = sorted(bank.scenario_ids(config.rollout.split))
    rng = np.random.default_rng(config.run.seed)
    ids = [pool[i] for i in rng.permutation(len(pool))]
    if config.rollout.max_scenarios:
        ids = ids[: config.rollout.max_scenarios]
    if not ids:
        raise ValueError(f"rollout.split {config.rollout.split!r} holds no scenarios")
    if config.rollout.max_staleness:
        needed = config.optim.max_steps * config.rollout.scenarios_per_step
        passes = [ids]
        while sum(len(p) for p in passes) < needed + len(ids):
            passes.append([ids[i] for i in rng.permutation(len(ids))])
        ids = [scenario for one_pass in passes for scenario in one_pass]
    return Dataset.from_dict({"prompt": ids})


def dialogue_stats(outcomes: list[DialogueOutcome], group_size: int) -> dict[str, float]:
    """The per-step negotiation metrics logged to TensorBoard."""
    rewards = [o.reward for o in outcomes if o.reward is not None]
    judged = [
        o.info["judgement"]["score"]
        for o in outcomes
        if o.info.get("judgement") and o.info["judgement"]["score"] is not None
    ]
    agreed = [o for o in outcomes if o.info["agreement"]]
    groups = [outcomes[i : i + group_size] for i in range(0, len(outcomes), group_size)]
    group_rewards = [[o.reward for o in g if o.reward is not None] for g in groups]
    return {
        "negotiation/reward_mean": statistics.fmean(rewards) if rewards else float("nan"),
        "negotiation/reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        "negotiation/ca_mean": statistics.fmean(judged) if judged else float("nan"),
        "negotiation/agreement_rate": len(agreed) / len(outcomes),
        "negotiation/rounds_to_agreement": statistics.fmean(
            o.info["rounds_to_agreement"] for o in agreed
        )
        if agreed
        else float("nan"),
        "negotiation/failed_rollout_fraction": 1 - len(agreed) / len(outcomes),
        "negotiation/judge_failure_fraction": sum(o.reward is None for o in outcomes)
        / len(outcomes),
        "negotiation/zero_advantage_group_fraction": sum(len(set(r)) <= 1 for r in group_rewards)
        / len(groups),
        "negotiation/dialogue_turns": statistics.fmean(len(o.info["transcript"]) for o in outcomes),
        "negotiation/dialogue_tokens": statistics.fmean(o.generated_tokens for o in outcomes),
        "negotiation/clipped_turn_fraction": sum(o.clipped_turns for o in outcomes)
        / max(1, sum(o.turns for o in outcomes)),
        **observer_stats(outcomes),
    }


def observer_stats(outcomes: list[DialogueOutcome]) -> dict[str, float]:
    """Violations and interventions per dialogue, when the dialogues ran under an observer."""
    observed = [o.info["observer"] for o in outcomes if "observer" in o.info]
    if not observed:
        return {}
    return {
        "negotiation/observer_violations": statistics.fmean(
            sum(len(c["violations"]) for c in summary["checks"]) for summary in observed
        ),
        "negotiation/observer_interventions": statistics.fmean(
            len(summary["interventions"]) for summary in observed
        ),
    }


def load_observer(spec: str, penalty: float) -> Any:
    """The observer of ``reward.observer`` ('' = none), with ``penalty`` per violation (>= 0)."""
    if not spec:
        return None
    from negotiation_env.observer import Observer

    return Observer.load(spec, **({"shaping_penalty": penalty} if penalty >= 0 else {}))


def save_final(trainer: Any, final: Path) -> None:
    """Save the trained model (adapter or weights) and tokenizer as ``final``, atomically.

    They are written to ``.final.partial`` beside it; only then does the old ``final`` (a
    previous run's) move aside and the new one take its name. A kill while saving leaves
    the previous ``final`` or none, never a half-written one that would load as the result.
    """
    staging = final.with_name(f".{final.name}.partial")
    replaced = final.with_name(f".{final.name}.replaced")
    main_process = trainer.is_world_process_zero()
    if main_process:  # remains of a killed save
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    trainer.save_model(str(staging))  # collective under distributed training; rank 0 writes
    if not main_process:
        return
    trainer.processing_class.save_pretrained(str(staging))
    if final.exists():
        os.replace(final, replaced)
    os.replace(staging, final)
    shutil.rmtree(replaced, ignore_errors=True)


class SelfPlayRollout(Rollout):
    """TRL ``rollout_func``: plays the dialogues of the prompts it receives with the current policy."""

    def __init__(self, config: TrainConfig, judge: Any, agreement_detector: Any, bank: Any):
        super().__init__(config)
        self.judge = judge
        self.bank = bank
        self.samples_per_dialogue = config.samples_per_dialogue()
        group_judge = None
        if config.reward.pairwise_in_group:
            weight = config.reward.absolute_weight
            group_judge = lambda requests: judge.group_rewards(requests, absolute_weight=weight)  # noqa: E731
        self.vector_env = VectorNegotiationEnv(
            config=config.env,
            scenarios=bank,
            judge=judge,
            agreement_detector=agreement_detector,
            group_judge=group_judge,
            observer=load_observer(config.reward.observer, config.reward.observer_penalty),
        )
        self.dialogue = GenerationSettings(
            max_new_tokens=config.rollout.max_new_tokens,
            temperature=config.rollout.temperature,
            top_p=config.rollout.top_p,
        )
        self.summary = GenerationSettings(
            max_new_tokens=config.rollout.summary_max_new_tokens,
            temperature=config.rollout.summary_temperature,
            top_p=1.0,
            no_repeat_ngram_size=config.rollout.summary_no_repeat_ngram_size,
        )

    def dialogue_scenarios(self, prompts: list[str]) -> list[str]:
        """One scenario id per dialogue: runs of ``samples_per_dialogue`` identical prompts."""
        per = self.samples_per_dialogue
        if len(prompts) % per:
            raise ValueError(
                f"{len(prompts)} prompts are not whole dialogues of {per} samples each"
            )
        scenario_ids = []
        for start in range(0, len(prompts), per):
            run = prompts[start : start + per]
            if len(set(run)) != 1:
                raise ValueError(
                    "a dialogue's samples span different scenarios: check micro_batch_size"
                )
            scenario_ids.append(run[0])
        return scenario_ids

    def collect(
        self, prompts: list[str], backend: Any, trainer: Any
    ) -> tuple[dict[str, list[Any]], list[DialogueOutcome], RolloutStats, dict[str, float]]:
        outcomes, stats = play_dialogues(
            backend,
            self.vector_env,
            self.dialogue_scenarios(prompts),
            self.dialogue,
            self.summary,
            self.config.trained_seats,
            self.config.rollout.cut_turns,
            self.config.rollout.train_resolution,
        )
        fields = to_grpo_samples(
            outcomes,
            self.config.turns_per_dialogue(),
            trainer.processing_class.pad_token_id,
            resolution_slot=self.config.rollout.train_resolution,
        )
        if self.config.rollout.per_seat_normalization:
            fields["negotiation_reward"] = per_seat_normalised(
                fields, self.config.rollout.group_size * self.samples_per_dialogue
            )
        return fields, outcomes, stats, dialogue_stats(outcomes, self.config.rollout.group_size)


def per_seat_normalised(fields: dict[str, list[Any]], group_samples: int) -> list[float | None]:
    """Rewards centred and scaled per seat within each group (SPIRAL/MARSHAL-style baselines)."""
    rewards, seats = fields["negotiation_reward"], fields["seat"]
    out: list[float | None] = list(rewards)
    for start in range(0, len(rewards), group_samples):
        for seat in set(seats[start : start + group_samples]):
            index = [
                i
                for i in range(start, min(start + group_samples, len(rewards)))
                if seats[i] == seat and rewards[i] is not None
            ]
            values = [rewards[i] for i in index]
            if not values:
                continue
            mean = statistics.fmean(values)
            std = statistics.pstdev(values) if len(values) > 1 else 0.0
            for i in index:
                out[i] = (rewards[i] - mean) / (std + 1e-4)
    return out


def negotiation_reward(
    prompts: list[Any], completions: list[Any], negotiation_reward: list[Any], **_: Any
) -> list[Any]:
    """TRL reward function: the dialogue's reward, passed through from the rollout."""
    return list(negotiation_reward)


def load_reward_judge(config: TrainConfig) -> Any:
    """The reward judge named by ``reward.judge`` (with the configured cache)."""
    from negotiation_env.judges.specs import load_judge, with_option

    spec = config.reward.judge
    if config.reward.judge_cache:
        spec = with_option(spec, "judge_cache", config.reward.judge_cache)
    return load_judge(spec, criterion=config.reward.criterion, role="reward")


def build_trainer(
    config: TrainConfig,
    rollout: Any = None,
    judge: Any = None,
    agreement_detector: Any = None,
    bank: Any = None,
) -> Any:
    """A ready GRPO trainer whose ``rollout_func`` is ``rollout`` (default: self-play)."""
    from negotiation_env.scenarios import ScenarioBank
    from trainers.grpo import NegotiationGRPOTrainer

    bank = bank or ScenarioBank.default()
    if rollout is None:
        from negotiation_env.judges.specs import load_agreement_detector

        judge = judge if judge is not None else load_reward_judge(config)
        if agreement_detector is None:
            agreement_detector = load_agreement_detector(config.reward.agreement)
        if config.reward.pairwise_in_group and not hasattr(judge, "group_rewards"):
            raise ValueError("reward.pairwise_in_group needs an LLM judge (one with group_rewards)")
        rollout = SelfPlayRollout(config, judge, agreement_detector, bank)
    model, tokenizer, peft_config = load_policy(config)
    samples_per_scenario = config.rollout.group_size * rollout.samples_per_dialogue
    args = grpo_arguments(config, samples_per_scenario, rollout.samples_per_dialogue)
    engine = None
    if config.rollout.engine == "server":
        from trainers.engine import ServerEngine

        engine = ServerEngine(config, tokenizer, model=model)
    dataset = scenario_dataset(config, bank)
    rollout.scenario_order = list(dataset["prompt"])
    return NegotiationGRPOTrainer(
        rollout=rollout,
        engine=engine,
        keep_checkpoints=config.run.save_total_limit,
        length_bucketing=config.optim.length_bucketing,
        model=model,
        reward_funcs=negotiation_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


@dataclasses.dataclass
class TrainResult:
    output_dir: str
    final_dir: str
    steps: int
    resumed_from: str | None
    seconds: float


def train_selfplay(config: TrainConfig, resume: bool = False, **components: Any) -> TrainResult:
    """Train (or resume) and save the final adapter/model to ``output_dir/final``.

    ``components`` go to :func:`build_trainer` (``rollout``, ``judge``,
    ``agreement_detector``, ``bank``); the single-agent baseline passes its own rollout.
    """
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    output = Path(config.run.output_dir)
    # transformers' TensorBoard callback reads its folder from the environment
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output / "tensorboard")
    output.mkdir(parents=True, exist_ok=True)
    removed = remove_incomplete_checkpoints(output)
    for path in removed:
        print(f"removed incomplete checkpoint {path}", file=sys.stderr)
    checkpoint = latest_complete_checkpoint(output) if resume else None
    if resume and checkpoint is None:
        print(f"no complete checkpoint in {output}; starting from scratch", file=sys.stderr)
    write_text_atomic(
        output / "train_config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False)
    )
    started = time.perf_counter()
    trainer = build_trainer(config, **components)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        trainer.rollout.close()
        if trainer.engine is not None:
            trainer.engine.close()
    final = output / "final"
    save_final(trainer, final)
    return TrainResult(
        str(output),
        str(final),
        trainer.state.global_step,
        str(checkpoint) if checkpoint else None,
        time.perf_counter() - started,
    )
