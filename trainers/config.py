"""Training configuration: one dataclass per section, loaded from YAML with strict checking.

Defaults are the paper's (``../shared/notes/paper.md``, "GRPO" and "Dialogue protocol"):
group size 8, batch 16 scenarios, learning rate 5e-6, KL beta 0, DAPO token-level loss,
dialogue temperature 0.7 / top-p 0.95, summary temperature 0.1, at most 7 turns, each turn
generated from the last two turns. The paper trained Qwen3-14B with 4-bit QLoRA for about
1,900 steps; ``configs/`` holds a CPU smoke configuration for the embedded model and a GPU
configuration for a 1-8B model.

A YAML file has the sections ``model``, ``rollout``, ``reward``, ``optim``, ``run`` (and
``env`` for any :class:`~negotiation_env.protocol.NegotiationConfig` field). Unknown keys and
wrongly typed values are errors that name the key::

    config = TrainConfig.from_yaml("configs/cpu_smoke.yaml")
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm.interface import CUT_TURN_POLICIES
from negotiation_env.protocol import NegotiationConfig, check_field_types

SEAT_MODES = ("paper", "full")
ENGINES = ("local", "server")


@dataclass
class ModelConfig:
    policy: str = field(
        default="smollm2", metadata={"help": "Policy model: registry name, local folder or hub id."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "float32, bfloat16 or auto (bf16 on CUDA, fp32 on CPU)."}
    )
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto."})
    lora: bool = field(
        default=True, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."}
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "peft target_modules: 'all-linear' or comma-separated names."},
    )
    qlora: bool = field(
        default=False,
        metadata={
            "help": "Load the base model in 4 bits (needs CUDA and bitsandbytes; paper: on)."
        },
    )
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Recompute activations to save memory."}
    )


@dataclass
class RolloutConfig:
    group_size: int = field(
        default=8, metadata={"help": "G: dialogues per scenario, compared in a group (paper: 8)."}
    )
    scenarios_per_step: int = field(
        default=16, metadata={"help": "Scenarios per optimisation step (paper: batch 16)."}
    )
    seats: str = field(
        default="paper",
        metadata={
            "help": "'paper': negotiator_0 is trained, negotiator_1 plays with the same weights but its "
            "tokens are not in the loss; 'full': both seats' turns are in the loss."
        },
    )
    per_seat_normalization: bool = field(
        default=False,
        metadata={
            "help": "In 'full' mode, normalise advantages per seat within a group (SPIRAL/MARSHAL)."
        },
    )
    temperature: float = field(
        default=0.7, metadata={"help": "Dialogue sampling temperature (paper: 0.7)."}
    )
    top_p: float = field(
        default=0.95, metadata={"help": "Dialogue nucleus sampling (paper: 0.95)."}
    )
    max_new_tokens: int = field(default=160, metadata={"help": "Token limit per dialogue turn."})
    cut_turns: str = field(
        default="sentence",
        metadata={
            "help": "A turn stopped by max_new_tokens: 'sentence' ends it after its last complete "
            "sentence (text and trained tokens), 'keep' leaves it cut."
        },
    )
    summary_temperature: float = field(
        default=0.1, metadata={"help": "Resolution sampling temperature (paper: 0.1)."}
    )
    summary_max_new_tokens: int = field(
        default=256, metadata={"help": "Token limit for the resolution."}
    )
    summary_no_repeat_ngram_size: int = field(
        default=0,
        metadata={
            "help": "No run of this many tokens is written twice in one resolution (0: off; "
            "the paper has none). Unless rollout.train_resolution is set, resolution tokens "
            "are not trained, so this changes what is judged, not the policy gradient's "
            "sampling."
        },
    )
    train_resolution: bool = field(
        default=False,
        metadata={
            "help": "Also put the resolution's tokens in the loss, one sample per dialogue "
            "with the dialogue's reward (the paper does not: its gradient is on the dialogue "
            "only). Needs summary_temperature equal to temperature, the temperature the "
            "loss reads log-probabilities at."
        },
    )
    split: str = field(default="train", metadata={"help": "Scenario pool for training."})
    max_scenarios: int = field(
        default=0, metadata={"help": "Use only the first N scenarios of the pool (0 = all)."}
    )
    engine: str = field(
        default="local",
        metadata={
            "help": "'local': generate in the training process; 'server': on the "
            "OpenAI-compatible servers of rollout.servers (docs/scale-out.md)."
        },
    )
    servers: list[str] = field(
        default_factory=list,
        metadata={"help": "API roots of the rollout servers, e.g. [http://10.0.0.5:8000/v1]."},
    )
    sync_every: int = field(
        default=1,
        metadata={
            "help": "Load the trained adapter on the servers every N optimiser steps. N > 1 "
            "samples with an adapter up to N-1 steps old and plays the next step ahead, one "
            "step more: it needs max_staleness >= N."
        },
    )
    max_staleness: int = field(
        default=0,
        metadata={
            "help": "Steps the sampling adapter may lag the trained one: 0 = on-policy; >= 1 = "
            "the next step's dialogues are played on the servers while this step trains."
        },
    )
    importance_sampling_cap: float = field(
        default=2.0,
        metadata={
            "help": "Server engine: per-token importance ratios (training / sampling policy) "
            "are truncated at this value (TRL's truncated correction)."
        },
    )
    adapter_dir: str = field(
        default="",
        metadata={
            "help": "Where adapters are saved for the servers to load; every server must "
            "read the same path ('' = run.output_dir/rollout_adapters)."
        },
    )
    server_timeout: float = field(
        default=600.0, metadata={"help": "Seconds one server may take for one batch."}
    )
    api_key_env: str = field(
        default="ROLLOUT_API_KEY",
        metadata={
            "help": "Environment variable holding the rollout servers' API key (their "
            "--api-key), sent as a Bearer token; unset: no key. Not OPENAI_API_KEY by default, "
            "so that a judge's key never goes to the rollout servers."
        },
    )


@dataclass
class RewardConfig:
    judge: str = field(
        default="default",
        metadata={
            "help": "Judge spec for the CA reward (see negotiation_env.judges.specs.load_judge)."
        },
    )
    criterion: str = field(default="ca", metadata={"help": "'ca' (paper) or 'conflict'."})
    agreement: str = field(
        default="default",
        metadata={
            "help": "Agreement detector spec: 'default' (LLM judge), 'marker', or an LLM spec."
        },
    )
    pairwise_in_group: bool = field(
        default=False,
        metadata={"help": "Reward by in-group pairwise win rate instead of the absolute score."},
    )
    absolute_weight: float = field(
        default=0.0,
        metadata={"help": "With pairwise_in_group, mix in this share of the absolute score."},
    )
    judge_cache: str = field(
        default="", metadata={"help": "SQLite file caching judgements ('' = in memory)."}
    )
    observer: str = field(
        default="",
        metadata={
            "help": "Run the dialogues under the grounded observer: 'default' (the shipped "
            "constraints) or a constraint file; '' = no observer (docs/observer.md)."
        },
    )
    observer_penalty: float = field(
        default=-1.0,
        metadata={
            "help": "Reward subtracted per observer violation of a trained seat; -1 = the "
            "constraint file's shaping_penalty."
        },
    )


@dataclass
class OptimConfig:
    learning_rate: float = field(default=5e-6, metadata={"help": "Paper: 5e-6."})
    beta: float = field(
        default=0.0, metadata={"help": "KL coefficient (paper: 0, no reference model)."}
    )
    loss_type: str = field(
        default="dapo", metadata={"help": "TRL loss type (paper: DAPO token-level)."}
    )
    max_steps: int = field(
        default=1900, metadata={"help": "Optimisation steps (paper: about 1,900)."}
    )
    micro_batch_size: int = field(
        default=0,
        metadata={
            "help": "Samples per forward/backward (0 = the whole step at once); a step "
            "accumulates the gradients of its samples / micro_batch_size micro-batches."
        },
    )
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping."})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision for training."})
    length_bucketing: bool = field(
        default=True,
        metadata={
            "help": "Micro-batches of samples of similar length, shared padding cut "
            "(trainers/buckets.py); the gradient is unchanged except for loss_type bnpo, "
            "where it stays off."
        },
    )


@dataclass
class RunConfig:
    output_dir: str = field(
        default="runs/selfplay", metadata={"help": "Checkpoints, TensorBoard logs, samples."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seeds scenario order, sampling and initialisation."}
    )
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int = field(
        default=3, metadata={"help": "Complete checkpoints kept (oldest removed)."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Log metrics every N steps."})
    sample_dialogues: int = field(
        default=2, metadata={"help": "Dialogues written to samples/ per logging step."}
    )
    report_to: str = field(default="tensorboard", metadata={"help": "'tensorboard' or 'none'."})


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    env: NegotiationConfig = field(default_factory=lambda: NegotiationConfig(mode="training"))

    def __post_init__(self) -> None:
        for section in (self.model, self.rollout, self.reward, self.optim, self.run):
            check_field_types(section)
        if self.rollout.seats not in SEAT_MODES:
            raise ValueError(
                f"rollout.seats: {self.rollout.seats!r} is not one of {list(SEAT_MODES)}"
            )
        if self.rollout.cut_turns not in CUT_TURN_POLICIES:
            raise ValueError(
                f"rollout.cut_turns: {self.rollout.cut_turns!r} is not one of "
                f"{list(CUT_TURN_POLICIES)}"
            )
        for name in (
            "group_size",
            "scenarios_per_step",
            "max_new_tokens",
            "summary_max_new_tokens",
        ):
            if getattr(self.rollout, name) < 1:
                raise ValueError(
                    f"rollout.{name}: must be at least 1, got {getattr(self.rollout, name)}"
                )
        if self.rollout.summary_no_repeat_ngram_size < 0:
            raise ValueError(
                "rollout.summary_no_repeat_ngram_size: must be >= 0 (0 disables), got "
                f"{self.rollout.summary_no_repeat_ngram_size}"
            )
        if self.rollout.train_resolution and (
            self.rollout.summary_temperature != self.rollout.temperature
        ):
            raise ValueError(
                "rollout.train_resolution: the loss reads the resolution's log-probabilities at "
                f"rollout.temperature ({self.rollout.temperature}), but it is sampled at "
                f"rollout.summary_temperature ({self.rollout.summary_temperature}); set the two "
                "equal so the resolution is trained on the distribution it was drawn from"
            )
        if self.rollout.group_size < 2:
            raise ValueError(
                "rollout.group_size: GRPO compares dialogues in a group; use at least 2"
            )
        self._check_engine()
        if self.reward.criterion not in ("ca", "conflict"):
            raise ValueError(
                f"reward.criterion: {self.reward.criterion!r} is not one of ['ca', 'conflict']"
            )
        if not 0.0 <= self.reward.absolute_weight <= 1.0:
            raise ValueError(
                f"reward.absolute_weight: must be in [0, 1], got {self.reward.absolute_weight}"
            )
        observer = self.reward.observer
        if observer not in ("", "default") and not Path(observer).is_file():
            raise ValueError(
                f"reward.observer: {observer!r} is neither 'default' nor an existing constraint file"
            )
        if self.optim.max_steps < 1:
            raise ValueError(f"optim.max_steps: must be at least 1, got {self.optim.max_steps}")
        if self.run.save_steps < 1 or self.run.save_total_limit < 1:
            raise ValueError("run.save_steps and run.save_total_limit must be at least 1")

    def _check_engine(self) -> None:
        rollout = self.rollout
        if rollout.engine not in ENGINES:
            raise ValueError(f"rollout.engine: {rollout.engine!r} is not one of {list(ENGINES)}")
        if not all(isinstance(url, str) and url for url in rollout.servers):
            raise ValueError(f"rollout.servers: expected a list of URLs, got {rollout.servers!r}")
        if rollout.sync_every < 1 or rollout.max_staleness < 0:
            raise ValueError(
                "rollout.sync_every must be at least 1 and rollout.max_staleness at least 0, "
                f"got {rollout.sync_every} and {rollout.max_staleness}"
            )
        if rollout.importance_sampling_cap < 1 or rollout.server_timeout <= 0:
            raise ValueError(
                "rollout.importance_sampling_cap must be at least 1 and rollout.server_timeout "
                f"above 0, got {rollout.importance_sampling_cap} and {rollout.server_timeout}"
            )
        if rollout.engine == "local":
            if rollout.servers or rollout.max_staleness or rollout.sync_every != 1:
                raise ValueError(
                    "rollout.servers, sync_every and max_staleness apply to rollout.engine: "
                    "server; the local engine always samples with the current weights"
                )
            return
        if not rollout.servers:
            raise ValueError("rollout.engine: server needs rollout.servers (a list of URLs)")
        if not self.model.lora:
            raise ValueError(
                "rollout.engine: server sends the weights to the servers as a LoRA adapter; "
                "set model.lora: true"
            )
        # playing one step ahead (max_staleness >= 1) adds one step to the adapter's lag
        lag = rollout.sync_every - 1 + (rollout.max_staleness > 0)
        if lag > rollout.max_staleness:
            raise ValueError(
                f"rollout.sync_every: {rollout.sync_every} samples with an adapter up to "
                f"{lag} steps old, more than rollout.max_staleness ({rollout.max_staleness}) "
                "allows"
            )

    @property
    def trained_seats(self) -> tuple[str, ...]:
        return (
            ("negotiator_0", "negotiator_1") if self.rollout.seats == "full" else ("negotiator_0",)
        )

    def samples_per_dialogue(self) -> int:
        """Training samples per dialogue: its trained turns, plus the resolution when
        ``rollout.train_resolution`` is set."""
        return self.turns_per_dialogue() + int(self.rollout.train_resolution)

    def turns_per_dialogue(self) -> int:
        """Training samples per dialogue: the most dialogue turns the trained seat(s) can speak."""
        turns = self.env.max_turns
        if self.rollout.seats == "full":
            return turns
        first = self.env.first_speaker == "negotiator_0"
        return (turns + 1) // 2 if first else turns // 2

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in sections:
                raise ValueError(
                    f"{source}: unknown section {key!r}; expected one of {sorted(sections)}"
                )
        built = {}
        for name, spec in sections.items():
            raw = values.get(name) or {}
            if not isinstance(raw, dict):
                raise ValueError(
                    f"{source}: section {name!r} must be a mapping, got {type(raw).__name__}"
                )
            section_type = NegotiationConfig if name == "env" else spec.default_factory().__class__
            known = {f.name for f in dataclasses.fields(section_type)}
            for key in raw:
                if key not in known:
                    raise ValueError(f"{source}: unknown key {name}.{key}; known: {sorted(known)}")
            if name == "env":
                raw = {"mode": "training", **raw}
            raw = _floats_from_exponent_strings(section_type, raw)
            try:
                built[name] = section_type(**raw)
                check_field_types(built[name])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{source}: {name}.{error}") from None
        return cls(**built)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
        for dotted, value in (overrides or {}).items():
            section, _, key = dotted.partition(".")
            values.setdefault(section, {})[key] = value
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def help(self) -> str:
        """Every setting with its default and help text, for ``negotiate train --help-config``."""
        lines = []
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            lines.append(f"{section.name}:")
            for item in dataclasses.fields(value):
                note = item.metadata.get("help", "")
                lines.append(f"  {item.name}: {getattr(value, item.name)!r}  # {note}")
        return "\n".join(lines)


# YAML 1.1 (PyYAML) reads 5e-4 as a string: only 5.0e-4 is a float there.
_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _floats_from_exponent_strings(section_type: type, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with float fields given as ``5e-4`` (a string to YAML 1.1) turned into floats,
    so that a learning rate written the way papers write it is read as meant."""
    floats = {f.name for f in dataclasses.fields(section_type) if str(f.type) == "float"}
    return {
        key: float(value)
        if key in floats and isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip())
        else value
        for key, value in raw.items()
    }
