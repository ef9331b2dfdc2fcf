"""A reward model behind the judge's ``RewardScorer`` interface: a causal LM with a scalar head.

The model is the registered base (``smollm2`` by default) loaded as a sequence classifier
with a LoRA adapter and head trained by ``python -m trainers.reward_model``; the adapter
folder also holds ``reward_model.json`` (the base model it was trained on and the
calibration of its rewards to the 0-5 scale). The default adapter is
``llm/reward_models/ca-rm-v2``; ``ca-rm-v1``, the earlier default, ships beside it so that
earlier results can be reproduced (``rm?adapter=ca-rm-v1``).

Conversations are rendered with the chat template up to the assistant's turn, so the
reward is read where the model would start to answer; training and scoring tokenise through
:meth:`RewardModelBackend.encode`, the same function.

>>> scorer = RewardModelBackend()                                      # doctest: +SKIP
>>> scorer.score([reward_conversation(scenario, "We split the cost ...")])  # doctest: +SKIP
[0.82]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from llm.interface import BackendError, Conversation
from llm.models import check_adapter, quiet_loading, resolve_model
from llm.transformers_backend import pick_device, pick_dtype, run_in_float32

METADATA_FILE = "reward_model.json"
SHIPPED_ADAPTER = "ca-rm-v2"


def shipped_adapter(name: str = SHIPPED_ADAPTER) -> Path:
    """The folder of a reward-model adapter that ships inside the package."""
    return Path(str(resources.files("llm") / "reward_models" / name))


def shipped_adapters() -> list[str]:
    """Names of the adapters that ship inside the package."""
    root = Path(str(resources.files("llm") / "reward_models"))
    return sorted(p.name for p in root.iterdir() if (p / METADATA_FILE).is_file())


def adapter_folder(adapter: str | Path | None) -> Path:
    """The folder an ``adapter`` argument names: the default shipped adapter when empty, a
    shipped adapter by its name (``ca-rm-v1``) unless a folder of that name exists here, else
    a folder holding an adapter (a clear error otherwise)."""
    if not adapter:
        return shipped_adapter()
    if not Path(adapter).expanduser().exists() and str(adapter) in shipped_adapters():
        return shipped_adapter(str(adapter))
    try:
        return check_adapter(adapter)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error} (shipped adapters: {shipped_adapters()})") from None


def adapter_digest(adapter: str | Path, length: int = 8) -> str:
    """The first ``length`` hex digits of the SHA-256 of the adapter's weight files."""
    digest = hashlib.sha256()
    for path in sorted(Path(adapter).glob("*.safetensors")) + sorted(Path(adapter).glob("*.bin")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


def read_metadata(adapter: str | Path) -> dict[str, Any]:
    path = Path(adapter) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(
            f"{adapter}: not a reward-model adapter ({METADATA_FILE} missing); train one with "
            "`python -m trainers.reward_model --out DIR`"
        ) from None
    except json.JSONDecodeError as error:
        raise BackendError(f"{path}: not valid JSON ({error})") from None
    for field in ("base", "calibration"):
        if field not in metadata:
            raise BackendError(f"{path}: field {field!r} is missing")
    return metadata


def render_for_reward(tokenizer: Any, conversation: Conversation) -> str:
    messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_for_reward(tokenizer: Any, conversations: Sequence[Conversation]) -> list[list[int]]:
    """Token ids the reward model reads, for training and scoring alike."""
    return [
        tokenizer(render_for_reward(tokenizer, c), add_special_tokens=False)["input_ids"]
        for c in conversations
    ]


def load_classifier(base: str, dtype: torch.dtype, cache: str | None = None) -> tuple[Any, Any]:
    """(sequence-classification model with one output, tokenizer) for a registered base."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(base, cache)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class RewardModelBackend:
    """Scores conversations with a LoRA reward model (see the module docstring)."""

    def __init__(
        self,
        adapter: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 16,
        cache: str | None = None,
    ):
        from peft import PeftModel

        folder = adapter_folder(adapter)
        metadata = read_metadata(folder)
        self.device = pick_device(device)
        with quiet_loading():
            model, self.tokenizer = load_classifier(
                metadata["base"], pick_dtype(dtype, self.device), cache
            )
        try:
            with quiet_loading():
                model = PeftModel.from_pretrained(model, str(folder))
        except (OSError, ValueError) as error:
            raise BackendError(f"cannot load reward-model adapter {folder}: {error}") from None
        self.model = model.to(self.device).eval()
        # rewards of a few units are spaced about 0.02 apart in bfloat16, enough to tie close
        # texts; the head is one vector, so float32 costs nothing
        run_in_float32(self.model.get_base_model().score)
        self.max_batch_size = max_batch_size
        self.calibration = dict(metadata["calibration"])
        self.metadata = metadata
        # the weights' digest is part of the name, so two adapters trained with the same
        # recipe (same metadata name) never share judge-cache entries or report rows
        recipe = metadata.get("name", folder.name)
        self.name = f"{metadata['base']}+{recipe}@{adapter_digest(folder)}"

    def encode(self, conversations: Sequence[Conversation]) -> list[list[int]]:
        return encode_for_reward(self.tokenizer, conversations)

    @torch.inference_mode()
    def score(self, conversations: Sequence[Conversation]) -> list[float]:
        """One reward per conversation, in order (micro-batches of similar length)."""
        sequences = self.encode(conversations)
        rewards: list[float | None] = [None] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.max_batch_size):
            batch = order[start : start + self.max_batch_size]
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):  # right padding, as in training
                ids[row, : len(sequences[index])] = torch.tensor(sequences[index])
                mask[row, : len(sequences[index])] = 1
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
            for row, index in enumerate(batch):
                rewards[index] = float(logits[row, 0].float())
        return rewards  # type: ignore[return-value]
