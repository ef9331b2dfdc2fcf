"""A tiny randomly initialised model and matching training configs, for trainer tests.

Imported by the tests (``tests.scripts.tiny``) and by the scripts beside it, which run as
separate processes (``tiny``).
"""

from pathlib import Path
from typing import Any

from negotiation_env.judges import AgreementDecision
from trainers.config import TrainConfig


def make_tiny_model(path: Path, tokenizer: Any) -> Path:
    """A 2-layer, 32-wide Llama with ``tokenizer``'s vocabulary, saved to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def always_agree(scenario: Any, transcript: Any) -> AgreementDecision:
    """Test double: the parties agree as soon as agreement is checked."""
    return AgreementDecision(True, 1.0, "always")


def tiny_config(model_dir: Any, output_dir: Any, **changes: Any) -> TrainConfig:
    """Self-play on the tiny model with the rubric stand-in; ``changes`` as ``{"section.key": value}``."""
    values: dict[str, dict[str, Any]] = {
        "model": {
            "policy": str(model_dir),
            "dtype": "float32",
            "device": "cpu",
            "lora": False,
            "gradient_checkpointing": False,
        },
        "rollout": {
            "group_size": 2,
            "scenarios_per_step": 2,
            "max_new_tokens": 5,
            "summary_max_new_tokens": 5,
        },
        "env": {"max_turns": 3, "mode": "training"},
        "reward": {"judge": "rule", "agreement": "marker"},
        "optim": {"max_steps": 1, "learning_rate": 1e-3},
        "run": {"output_dir": str(output_dir), "report_to": "none", "sample_dialogues": 0},
    }
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        values[section][key] = value
    return TrainConfig.from_dict(values)
