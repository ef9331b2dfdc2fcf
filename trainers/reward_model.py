"""Train the Collective-Agency reward model: Bradley-Terry on authored preference pairs.

    python -m trainers.reward_model --out runs/rm                      # the shipped recipe (v2)
    python -m trainers.reward_model --out runs/rm-v1 --sources shipped # ca-rm-v1's data
    python -m trainers.reward_model --out runs/rm-ablation --held-out-flaws hostile,off_topic
    python -m trainers.reward_model --out runs/rm --resume             # after an interruption

The pairs come from :mod:`trainers.preferences` (training-split scenarios only, length
balanced); whole dilemmas (``--held-out-share``) and, optionally, whole kinds of flaw
(``--held-out-flaws``) are kept out of training and measured afterwards. The model is a
registered base (SmolLM2-135M by default) loaded as a sequence classifier, with a LoRA
adapter on its top ``--lora-layers`` layers and a trained scalar head, fitted with the
Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)`` (a small penalty keeps rewards
centred). The output folder is an adapter that ``RewardModelBackend(adapter=DIR)`` and the
judge spec ``rm?adapter=DIR`` load; ``reward_model.json`` beside it records the base, the
recipe, the calibration (mean and spread of the rewards of training texts), the training
log and the accuracy on training and held-out pairs, by flaw kind.

Why not TRL's ``RewardTrainer``: it runs every pair through the whole model at every step.
Measured on 2 CPU cores, a step of 8 pairs took 68 s (about 4 hours an epoch). The adapter
sits on the top layers only, so the frozen bottom layers give the same output for a text at
every step: here they run once per text before training, their outputs are kept, and each
step runs only the top layers, for each distinct text of one scenario's pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from negotiation_env.judges.pairwise import calibration_report
from trainers.preferences import (
    DEFAULT_FLAWS,
    FLAWS,
    PreferencePair,
    build_pairs,
    length_report,
    load_source_list,
    load_written_off_topic,
    split_pairs,
)

RECIPE_VERSION = "ca-rm-v2"
BOTTOM_DTYPES = ("float32", "bfloat16")


@dataclass
class RewardModelRecipe:
    """How the reward model is trained; every field has the shipped adapter's value."""

    base: str = field(default="smollm2", metadata={"help": "Registered base model."})
    sources: str = field(
        default="shipped,other-authors",
        metadata={
            "help": "Comma-separated source files of authored resolutions: named sets "
            "(shipped, other-authors, other-authors-2) or paths ('' = shipped)."
        },
    )
    max_sources: int = field(default=0, metadata={"help": "Use the first N sources (0 = all)."})
    written_off_topic: str = field(
        default="",
        metadata={
            "help": "Comma-separated files of hand-written off-topic resolutions, paired "
            "against their scenario's good texts: the named set (written) or paths ('' = none)."
        },
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_layers: int = field(default=4, metadata={"help": "LoRA on the top N decoder layers."})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the training pairs."})
    max_length: int = field(default=640, metadata={"help": "Longer sequences are dropped."})
    center_rewards: float = field(default=0.01, metadata={"help": "Penalty on mean reward^2."})
    held_out_share: float = field(default=0.15, metadata={"help": "Dilemmas held out."})
    held_out_flaws: tuple[str, ...] = field(default=(), metadata={"help": "Flaw kinds held out."})
    seed: int = field(default=0, metadata={"help": "Pairs, split and initialisation."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after N steps (-1: epochs)."})
    log_every: int = field(default=10, metadata={"help": "Print the loss every N steps."})
    checkpoint_every: int = field(default=25, metadata={"help": "Checkpoint every N steps."})
    calibration_pairs: int = field(
        default=400, metadata={"help": "Training pairs whose rewards set the calibration."}
    )
    near_off_topic: bool = field(
        default=False,
        metadata={"help": "Add off-topic pairs from dilemmas argued by the same personas."},
    )
    balance_flaws: bool = field(
        default=False,
        metadata={"help": "Weight the loss so every kind of flaw counts the same in total."},
    )
    bottom_dtype: str = field(
        default="float32",
        metadata={
            "help": "Precision of the frozen bottom layers (float32 or bfloat16; the top "
            "layers always train in float32). bfloat16 computes their outputs about 2.7x "
            "faster on CPU cores with bfloat16 instructions and matches a judge run with "
            "dtype=bfloat16."
        },
    )

    def __post_init__(self):
        if self.bottom_dtype not in BOTTOM_DTYPES:
            raise ValueError(
                f"bottom_dtype: expected one of {list(BOTTOM_DTYPES)}, got {self.bottom_dtype!r}"
            )


def _lora_config(recipe: RewardModelRecipe, layers: int) -> Any:
    from peft import LoraConfig

    top = list(range(max(0, layers - recipe.lora_layers), layers))
    return LoraConfig(
        task_type="SEQ_CLS",
        r=recipe.lora_rank,
        lora_alpha=2 * recipe.lora_rank,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        layers_to_transform=top,
    )


def accuracy_by_flaw(
    pairs: Sequence[PreferencePair], chosen: Sequence[float], rejected: Sequence[float]
) -> dict[str, Any]:
    """Share of pairs where the chosen text got the higher reward, overall and per flaw."""
    wins = [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
    by_flaw: dict[str, list[float]] = {}
    for pair, win in zip(pairs, wins, strict=True):
        by_flaw.setdefault(pair.flaw, []).append(win)
    return {
        "pairs": len(pairs),
        "accuracy": round(statistics.fmean(wins), 4) if wins else None,
        "by_flaw": {k: round(statistics.fmean(v), 4) for k, v in sorted(by_flaw.items())},
    }


class _Trunk:
    """The decoder split in two: the frozen bottom layers, run once per text (their outputs
    are cached), and the top layers that carry the LoRA adapter, run with gradients."""

    def __init__(self, peft_model: Any, trained_layers: int, bottom_dtype: str = "float32"):
        import torch

        classifier = peft_model.base_model.model
        self.decoder = classifier.model
        self.head = classifier.score
        self.first = len(self.decoder.layers) - trained_layers
        self.bottom_dtype = getattr(torch, bottom_dtype)
        for layer in self.decoder.layers[: self.first]:
            layer.to(self.bottom_dtype)

    def _run(self, hidden: Any, layers: Sequence[Any]) -> Any:
        import torch

        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        rotary = self.decoder.rotary_emb(hidden, position_ids=positions)
        for layer in layers:  # one sequence, no padding: plain causal attention
            output = layer(
                hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary
            )
            hidden = output[0] if isinstance(output, tuple) else output
        return hidden

    def bottom(self, ids: Sequence[int]) -> Any:
        import torch

        with torch.inference_mode():
            embedded = self.decoder.embed_tokens(torch.tensor([list(ids)]))
            hidden = self._run(embedded.to(self.bottom_dtype), self.decoder.layers[: self.first])
            return hidden.float().clone()  # the top layers read float32

    def reward(self, cached: Any) -> Any:
        hidden = self._run(cached, self.decoder.layers[self.first :])
        return self.head(self.decoder.norm(hidden[:, -1]))[0, 0]


class _BottomCache:
    """The bottom layers' output for a token sequence, computed once and kept on disk: a file
    per sequence, named by a hash of the base model, the split point and the token ids, and
    written atomically, so an interrupted run loses at most the text it was computing."""

    def __init__(
        self, root: str | Path, base: str, first_trained_layer: int, dtype: str = "float32"
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # float32 keeps the key it had before other precisions existed (caches stay valid)
        precision = "" if dtype == "float32" else f"{dtype}:"
        self.prefix = f"{base}:{first_trained_layer}:{precision}"
        self.hits = 0

    def get(self, ids: Sequence[int], compute: Any) -> Any:
        import torch

        key = hashlib.sha256((self.prefix + ",".join(map(str, ids))).encode()).hexdigest()
        path = self.root / f"{key[:40]}.pt"
        if path.is_file():
            self.hits += 1
            return torch.load(path, weights_only=True)
        hidden = compute(ids)
        temporary = path.with_suffix(".tmp")
        torch.save(hidden, temporary)
        temporary.replace(path)
        return hidden


def _distinct_texts(pairs: Sequence[PreferencePair]) -> list[tuple[str, str]]:
    """The (scenario id, text) of every side of ``pairs``, each once, in a fixed order: a
    text is scored under its scenario's prompt, and good texts recur across pairs."""
    return sorted({(p.scenario_id, t) for p in pairs for t in (p.chosen, p.rejected)})


def _scenario_batches(pairs: Sequence[PreferencePair], rng: random.Random) -> list[list[int]]:
    """Pair indices grouped by scenario (a scenario's texts are scored once per step)."""
    groups: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        groups.setdefault(pair.scenario_id, []).append(index)
    batches = list(groups.values())
    rng.shuffle(batches)
    return batches


def recipe_pairs(
    recipe: RewardModelRecipe, bank: Any
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The recipe's (training, held-out) preference pairs, as its training run builds them."""
    sources = load_source_list(recipe.sources, bank=bank)[: recipe.max_sources or None]
    flaws = DEFAULT_FLAWS + (("off_topic_near",) if recipe.near_off_topic else ())
    written = load_written_off_topic(recipe.written_off_topic, bank=bank)
    pairs = build_pairs(sources, seed=recipe.seed, flaws=flaws, written=written)
    train, held = split_pairs(pairs, recipe.held_out_share, recipe.seed, recipe.held_out_flaws)
    return train, held


def train_reward_model(
    out: str | Path,
    recipe: RewardModelRecipe | None = None,
    resume: bool = False,
    bottom_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Train, calibrate, measure and save the adapter in ``out``; returns the metadata.

    Each step takes one scenario's pairs: its distinct texts are scored once through the
    trained top layers (the bottom layers' outputs were cached before training), and the
    Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)`` is averaged over its pairs,
    plus ``center_rewards * mean(r^2)`` to keep rewards near zero. A checkpoint (adapter,
    optimiser, step) is written atomically every ``checkpoint_every`` steps; ``resume``
    continues from it. The bottom layers' outputs are kept on disk as they are computed
    (:class:`_BottomCache`), in ``bottom_cache`` if given (shared by runs on the same base,
    kept afterwards), else in ``out/.bottom-cache`` (for a resumed run; removed at the end).
    """
    import torch
    from peft import get_peft_model

    from llm.reward_backend import METADATA_FILE, encode_for_reward, load_classifier
    from negotiation_env.judges.reward_model import reward_conversation
    from negotiation_env.scenarios import ScenarioBank

    recipe = recipe or RewardModelRecipe()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bank = ScenarioBank.default()
    train_pairs, held_pairs = recipe_pairs(recipe, bank)
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load_classifier(recipe.base, torch.float32)
    peft_model = get_peft_model(model, _lora_config(recipe, model.config.num_hidden_layers))
    trunk = _Trunk(
        peft_model, min(recipe.lora_layers, model.config.num_hidden_layers), recipe.bottom_dtype
    )

    texts = _distinct_texts(train_pairs)
    ids = encode_for_reward(
        tokenizer, [reward_conversation(bank.get(sid), text) for sid, text in texts]
    )
    keep = {key for key, seq in zip(texts, ids, strict=True) if len(seq) <= recipe.max_length}
    train_pairs = [
        p for p in train_pairs if {(p.scenario_id, p.chosen), (p.scenario_id, p.rejected)} <= keep
    ]
    started = time.perf_counter()
    disk = _BottomCache(
        bottom_cache or out / ".bottom-cache", recipe.base, trunk.first, recipe.bottom_dtype
    )
    print(f"caching the bottom layers' outputs for {len(keep)} texts", flush=True)
    cached = {
        key: disk.get(seq, trunk.bottom) for key, seq in zip(texts, ids, strict=True) if key in keep
    }
    print(
        f"cached in {time.perf_counter() - started:.0f} s ({disk.hits} read from {disk.root})",
        flush=True,
    )

    peft_model.train()
    parameters = [p for p in peft_model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=recipe.learning_rate, weight_decay=0.0)
    kind_counts = Counter(p.flaw for p in train_pairs)
    weight = {
        flaw: (len(train_pairs) / (len(kind_counts) * n) if recipe.balance_flaws else 1.0)
        for flaw, n in kind_counts.items()
    }
    steps_per_epoch = len({p.scenario_id for p in train_pairs})
    total = recipe.max_steps if recipe.max_steps > 0 else math.ceil(recipe.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / total)),
    )
    step, log = 0, []
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        for parameter, value in zip(parameters, state["parameters"], strict=True):
            parameter.data.copy_(value)
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        step, log = state["step"], state["log"]
        print(f"resumed at step {step}", flush=True)
    rng = random.Random(recipe.seed)
    order: list[list[int]] = []
    for _ in range(math.ceil(total / steps_per_epoch) + 1):
        order.extend(_scenario_batches(train_pairs, rng))
    while step < total:
        batch = [train_pairs[i] for i in order[step]]
        keys = _distinct_texts(batch)
        rewards = {key: trunk.reward(cached[key]) for key in keys}
        chosen = torch.stack([rewards[(p.scenario_id, p.chosen)] for p in batch])
        rejected = torch.stack([rewards[(p.scenario_id, p.rejected)] for p in batch])
        weights = torch.tensor([weight[p.flaw] for p in batch])
        losses = -torch.nn.functional.logsigmoid(chosen - rejected)
        loss = (weights * losses).sum() / weights.sum()
        loss = loss + recipe.center_rewards * torch.stack(list(rewards.values())).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        schedule.step()
        step += 1
        log.append(
            {
                "step": step,
                "loss": round(loss.item(), 5),
                "accuracy": round((chosen > rejected).float().mean().item(), 4),
            }
        )
        if step % recipe.log_every == 0 or step == total:
            recent = log[-recipe.log_every :]
            print(
                f"step {step}/{total} loss {statistics.fmean(r['loss'] for r in recent):.4f} "
                f"accuracy {statistics.fmean(r['accuracy'] for r in recent):.3f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        if step % recipe.checkpoint_every == 0 and step < total:
            temporary = checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "parameters": [p.detach().clone() for p in parameters],
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": step,
                    "log": log,
                },
                temporary,
            )
            temporary.replace(checkpoint)
    seconds = time.perf_counter() - started

    peft_model.eval()
    sample = random.Random(recipe.seed).sample(
        train_pairs, min(recipe.calibration_pairs, len(train_pairs))
    )
    measured = _measure(
        trunk,
        lambda key, sequence: cached[key] if key in cached else disk.get(sequence, trunk.bottom),
        tokenizer,
        bank,
        sample,
        held_pairs,
    )
    calibration = {
        "center": round(statistics.fmean(measured["train_rewards"]), 4),
        "scale": round(max(statistics.pstdev(measured["train_rewards"]), 1e-3), 4),
    }
    card = out / "README.md"
    had_card = card.exists()
    peft_model.save_pretrained(str(out))
    if not had_card:
        card.unlink(missing_ok=True)  # peft's model-card template, empty and with local paths
    metadata = {
        "name": RECIPE_VERSION,
        "base": recipe.base,
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()},
        "calibration": calibration,
        "train_sample": measured["train"],
        "held_out": measured["held_out"],
        "held_out_pairwise": measured["held_out_pairwise"],
        "data": {"train": length_report(train_pairs), "held_out": length_report(held_pairs)},
        "train_seconds": round(seconds, 1),
        "log": log,
    }
    temporary = out / (METADATA_FILE + ".tmp")
    temporary.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    temporary.replace(out / METADATA_FILE)
    checkpoint.unlink(missing_ok=True)
    if bottom_cache is None:
        shutil.rmtree(disk.root, ignore_errors=True)
    return metadata


def _measure(
    trunk: _Trunk, bottom: Any, tokenizer: Any, bank: Any, train_pairs, held_pairs
) -> dict[str, Any]:
    """Rewards of the given training pairs' texts; accuracy on them and on held-out pairs,
    and how well ``sigmoid(reward_a - reward_b)`` is calibrated on the held-out pairs.

    Every text goes through the trunk the model was trained with: ``bottom((scenario id,
    text), ids)``, the bottom layers' output (kept from training, or computed once through the
    disk cache), then the top layers, so the measured rewards use the bottom layers'
    precision of the training run.
    """
    import torch

    from llm.reward_backend import encode_for_reward
    from negotiation_env.judges.reward_model import reward_conversation

    # each distinct text once: a good resolution is the chosen side of many pairs
    keys = _distinct_texts([*train_pairs, *held_pairs])
    ids = encode_for_reward(
        tokenizer, [reward_conversation(bank.get(sid), text) for sid, text in keys]
    )
    scored = {}
    with torch.no_grad():
        for key, sequence in zip(keys, ids, strict=True):
            hidden = bottom(key, sequence)
            scored[key] = float(trunk.reward(hidden))

    def rewards(pairs, side):
        return [scored[(p.scenario_id, getattr(p, side))] for p in pairs]

    train_chosen, train_rejected = rewards(train_pairs, "chosen"), rewards(train_pairs, "rejected")
    held_chosen, held_rejected = rewards(held_pairs, "chosen"), rewards(held_pairs, "rejected")
    return {
        "train_rewards": [r for r in train_chosen + train_rejected if math.isfinite(r)],
        "train": accuracy_by_flaw(train_pairs, train_chosen, train_rejected),
        "held_out": accuracy_by_flaw(held_pairs, held_chosen, held_rejected),
        "held_out_pairwise": (
            calibration_report([c - r for c, r in zip(held_chosen, held_rejected, strict=True)])
            if held_pairs
            else None
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.reward_model", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="folder for the adapter and its metadata")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--bottom-cache",
        default=None,
        help="folder that keeps the frozen layers' outputs across runs on the same base "
        "(default: inside --out, removed when training ends)",
    )
    defaults = RewardModelRecipe()
    for name, spec in RewardModelRecipe.__dataclass_fields__.items():
        flag = "--" + name.replace("_", "-")
        if name == "held_out_flaws":
            parser.add_argument(flag, default="", help=f"comma-separated, from {list(FLAWS)}")
        else:
            default = getattr(defaults, name)
            parse = (
                {"action": argparse.BooleanOptionalAction}  # --x / --no-x
                if isinstance(default, bool)
                else {"type": type(default)}
            )
            parser.add_argument(
                flag,
                default=default,
                help=f"{spec.metadata['help']} (default: %(default)s)",
                **parse,
            )
    args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in RewardModelRecipe.__dataclass_fields__}
    values["held_out_flaws"] = tuple(f for f in args.held_out_flaws.split(",") if f)
    try:
        recipe = RewardModelRecipe(**values)
        metadata = train_reward_model(
            args.out, recipe, resume=args.resume, bottom_cache=args.bottom_cache
        )
    except ValueError as error:
        print(f"reward model: error: {error}", file=sys.stderr)
        return 2
    print(
        json.dumps({k: metadata[k] for k in ("calibration", "train_sample", "held_out")}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
