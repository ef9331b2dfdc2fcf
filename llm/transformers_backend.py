"""A local causal LM behind the backend interface: batched generation with real log-probabilities.

Generation runs its own decode loop instead of ``model.generate``: one prefill of the
left-padded batch, then one token per step from the KV cache. That keeps what a trainer
needs exact (the log-probability of each sampled token under logits / temperature, before
top-p/top-k truncation, recorded at sampling time) and keeps the loop small enough to
optimise. Conversations are sorted by length and cut into micro-batches to limit padding.

>>> backend = TransformersBackend("smollm2")                      # doctest: +SKIP
>>> [g.text for g in backend.generate([[{"role": "user", "content": "Hi!"}]],
...                                   GenerationSettings(max_new_tokens=20))]  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from llm.interface import (
    BackendError,
    ContextLengthError,
    Conversation,
    Generation,
    GenerationCancelled,
    GenerationSettings,
)
from llm.kv_cache import (
    PrefixStore,
    cache_from_blocks,
    plain_layers,
    reserve_room,
    shared_prefixes,
)
from llm.models import check_adapter, quiet_loading, resolve_model
from llm.shared_prefix import (
    GroupPlan,
    SharedPrefixLayout,
    plan_groups,
    shared_prefix_attention_on,
    split_cache,
    supports_shared_prefix,
)

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype: {dtype!r} is not a torch dtype (try float32, bfloat16, float16)")
    return value


def keep_head_in_float32(model: torch.nn.Module) -> None:
    """Run the output projection in float32 on a half-precision model.

    Logits near 20 are spaced 0.125 apart in bfloat16, which makes close candidates exactly
    equal (a judge choosing between "A" and "B" then reads 0.49 / 0.49). The body keeps its
    fast half-precision matmuls; only the last projection, a small share of the work, is
    done in float32.
    """
    head = model.get_output_embeddings()
    if head is not None:
        run_in_float32(head)


def run_in_float32(module: torch.nn.Module) -> None:
    """Run one module of a half-precision model in float32: its inputs are cast up and its
    parameters become float32 copies (with tied embeddings, converting the shared weight in
    place would turn the input embeddings to float32 as well). Nothing is done to a module
    already in float32."""
    if all(p.dtype == torch.float32 for p in module.parameters()):
        return
    for part in module.modules():
        for name, parameter in list(part.named_parameters(recurse=False)):
            copy = torch.nn.Parameter(parameter.detach().float().clone(), requires_grad=False)
            setattr(part, name, copy)
    module.register_forward_pre_hook(lambda _, inputs: tuple(x.float() for x in inputs))


def _cache_keyword(model: torch.nn.Module) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache``; support both."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _output_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class TransformersBackend:
    """A causal LM (optionally with a LoRA adapter) on CPU or CUDA.

    ``model`` is a registry name (``smollm2``), a local folder or a hub id; ``adapter`` a
    peft adapter folder. ``max_batch_size`` caps how many conversations share one forward.
    """

    def __init__(
        self,
        model: str = "smollm2",
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 64,
        cache: str | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        torch_dtype = pick_dtype(dtype, self.device)
        path = resolve_model(model, cache)
        if adapter:
            adapter = str(check_adapter(adapter))
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(path)
                network = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        except OSError as error:
            raise BackendError(
                f"cannot load model {model!r} from {path!r}: {error}. Give a registered name "
                f"(negotiate models list), a local folder, or a hub id with network access."
            ) from None
        if torch_dtype in (torch.bfloat16, torch.float16):
            keep_head_in_float32(network)
        if adapter:
            from peft import PeftModel

            with quiet_loading():
                network = PeftModel.from_pretrained(network, adapter)
        network.to(self.device).eval()
        # The name identifies what produces the outputs (judgement caches key on it).
        self.name = (
            f"hf:{model}"
            + (f"+{adapter}" if adapter else "")
            + f"|{str(torch_dtype).removeprefix('torch.')}"
        )
        self._setup(network, tokenizer, max_batch_size)

    @classmethod
    def from_objects(
        cls,
        model: torch.nn.Module,
        tokenizer: Any,
        name: str = "hf:in-memory",
        max_batch_size: int = 64,
    ) -> TransformersBackend:
        """Wrap a model and tokenizer already in memory (e.g. the policy a trainer updates)."""
        backend = cls.__new__(cls)
        backend.device = next(model.parameters()).device
        backend.name = name
        backend._setup(model, tokenizer, max_batch_size)
        return backend

    def _setup(self, model: torch.nn.Module, tokenizer: Any, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: must be at least 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.drop_finished = True
        self.top_p_shortlist = 256  # see _nucleus; 0 = always sort the whole vocabulary
        self.prefix_store: PrefixStore | None = None  # set inside prefix_caching()
        self.prefix_cache_bytes = 2 * 2**30  # 0 = never reuse prefixes
        # prompts of one call that share at least this many tokens have them computed once
        self.min_shared_prefix = 32
        # decode steps read such a prefix once per group of rows (llm/
        # shared_prefix.py); measured faster on CPU, not yet measured on CUDA
        self.shared_prefix_attention = self.device.type == "cpu"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_token_id = tokenizer.pad_token_id
        self.stop_token_ids = end_of_turn_ids(self.tokenizer, self.model)
        self._cache_keyword = _cache_keyword(model)
        self._cancel: threading.Event | None = None  # set inside cancelled_by()
        # adapters loaded by name at run time (load_adapter); the one given at construction
        # is peft's "default" and stays what the backend serves outside using_adapter()
        self.adapters: dict[str, str] = {}
        self._default_adapter = "default" if hasattr(model, "peft_config") else None

    # ------------------------------------------------------------------ adapters
    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the PEFT adapter in ``path`` beside those already resident, under ``name``
        (what :meth:`using_adapter` selects it by). The base model stays what is served
        outside that scope. Raises ValueError for a taken name, FileNotFoundError for a
        folder that holds no adapter."""
        from peft import PeftModel

        if not name or name == "default" or name in self.adapters:
            raise ValueError(f"adapter name {name!r} is empty, reserved or already loaded")
        folder = check_adapter(path)
        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        check_adapter_fits(base, folder)  # before the model is touched: a misfit changes nothing
        with quiet_loading():
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(folder), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
        self.model.eval()
        self.adapters[name] = str(folder)
        self._serve_default()

    def unload_adapter(self, name: str) -> None:
        """Free the adapter loaded as ``name``; KeyError when none is."""
        if name not in self.adapters:
            raise KeyError(name)
        if self._default_adapter is None and len(self.adapters) == 1:
            self.model = self.model.unload()  # the last one: back to the plain model
        else:
            self.model.delete_adapter(name)
        del self.adapters[name]
        self._serve_default()

    @contextmanager
    def using_adapter(self, name: str | None) -> Iterator[None]:
        """Within this scope generations and scores use the adapter loaded as ``name``
        (None: the model as constructed, with its own adapter if it was given one); outside
        it, the model as constructed."""
        if name is None:
            yield
            return
        if name not in self.adapters:
            raise KeyError(name)
        self.model.base_model.enable_adapter_layers()
        self.model.base_model.set_adapter(name, inference_mode=True)
        try:
            yield
        finally:
            self._serve_default()

    def _serve_default(self) -> None:
        """Make the model as constructed active again (its own adapter, or none)."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return
        if self._default_adapter is None:
            self.model.base_model.disable_adapter_layers()
        else:
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(self._default_adapter)

    @property
    def vocabulary_size(self) -> int:
        """Token ids below this are valid input."""
        return int(self.model.get_input_embeddings().num_embeddings)

    @property
    def context_length(self) -> int | None:
        """How many positions the model has (prompt and generated tokens together), if known."""
        return getattr(self.model.config, "max_position_embeddings", None)

    @contextmanager
    def cancelled_by(self, event: threading.Event) -> Iterator[None]:
        """Within this scope, a generation stops with :class:`GenerationCancelled` at its next
        decoding step once ``event`` is set. :mod:`llm.serve` sets it when the client of a
        request disconnects, so that nobody waits for an answer no one will read."""
        previous, self._cancel = self._cancel, event
        try:
            yield
        finally:
            self._cancel = previous

    def _check_cancelled(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise GenerationCancelled(f"{self.name}: generation cancelled by its caller")

    # ------------------------------------------------------------------ prompts
    def render(self, conversation: Conversation, assistant_prefix: str = "") -> str:
        """The chat template applied to ``conversation``, ready for the assistant to speak."""
        return render_chat(self.tokenizer, conversation, assistant_prefix)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer, texts)

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into micro-batches of similar length (less padding)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [
            order[i : i + self.max_batch_size] for i in range(0, len(order), self.max_batch_size)
        ]

    def _left_pad(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            if sequence:
                ids[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
                mask[row, width - len(sequence) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        layout: SharedPrefixLayout | None = None,
        logits_to_keep: int = 1,
    ) -> Any:
        """The last ``logits_to_keep`` positions' logits and the updated cache; with a
        ``layout``, ``cache`` and ``mask`` hold the rows' suffixes and attention reads the
        groups' prefixes once."""
        kwargs = {self._cache_keyword: cache, "logits_to_keep": logits_to_keep}
        scope = nullcontext()
        if layout is not None:
            layout.set_mask(mask)
            kwargs["shared_prefix"] = layout
            scope = shared_prefix_attention_on(self.model)
        with scope:
            return self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs
            )

    # ------------------------------------------------------------------ prefix reuse
    @contextmanager
    def prefix_caching(self, budget_bytes: int | None = None) -> Iterator[PrefixStore | None]:
        """Reuse the keys and values of prompt prefixes already processed, within this scope.

        Inside it, :meth:`generate` keeps the keys and values of every prompt and generation
        (up to ``budget_bytes``, default ``self.prefix_cache_bytes``; least recently used
        dropped first) and starts each new prompt from the stored sequence sharing its
        longest prefix; prompts of one call that share a prefix have it computed once. A
        negotiation rollout re-reads each seat's persona, rules and dilemma every turn, and
        a group's dialogues share their opening prompts, so most prompt tokens are never
        recomputed. The weights must not change inside the scope (stored keys would be
        stale): rollouts open one per batch of dialogues. Nested scopes share the outer
        store; a budget of 0 turns reuse off (the scope yields None).

        >>> with backend.prefix_caching() as store:                        # doctest: +SKIP
        ...     play_episodes(envs, seats)
        >>> store.computed_tokens / store.prompt_tokens                    # doctest: +SKIP
        """
        budget = self.prefix_cache_bytes if budget_bytes is None else budget_bytes
        if self.prefix_store is not None or budget <= 0:
            yield self.prefix_store
            return
        self.prefix_store = PrefixStore(budget)
        try:
            yield self.prefix_store
        finally:
            self.prefix_store = None

    def _prefill(
        self, sequences: Sequence[Sequence[int]], keep: Sequence[int] | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Run ``sequences`` through the model, starting from stored prefixes where there are.

        Each row is laid out as [padding | reused prefix | padding | new tokens]: the stored
        keys and values are right-aligned in a cache block, the rest of the prompt is
        left-padded after it, and the attention mask hides both paddings. Positions count
        only real tokens, so every token sits where it would without reuse. Returns the
        model output (the cache, and the logits of the last position, or of the last
        ``keep[i]`` positions of each row: those are computed, never reused), the mask and
        the new tokens' positions.
        """
        store = self.prefix_store
        keep = list(keep) if keep is not None else [1] * len(sequences)
        # at least the last token is computed: its logits start the generation
        reuse = [
            store.longest(s, limit=len(s) - k) if store is not None else (None, 0)
            for s, k in zip(sequences, keep, strict=True)
        ]
        cached = [length for _, length in reuse]
        new = [list(s[c:]) for s, c in zip(sequences, cached, strict=True)]
        ids, new_mask = self._left_pad(new)
        width = max(cached)
        old_mask = torch.zeros((len(sequences), width), dtype=torch.long, device=self.device)
        cache = None
        if width:
            template = next(entry for entry, _ in reuse if entry is not None).layers
            layers = []
            for layer, (keys, values) in enumerate(template):
                shape = (len(sequences), keys.shape[0], width, keys.shape[2])
                block_keys = keys.new_zeros(shape)
                block_values = values.new_zeros(shape)
                for row, (entry, length) in enumerate(reuse):
                    if length:
                        block_keys[row, :, width - length :] = entry.layers[layer][0][:, :length]
                        block_values[row, :, width - length :] = entry.layers[layer][1][:, :length]
                layers.append((block_keys, block_values))
            for row, length in enumerate(cached):
                if length:
                    old_mask[row, width - length :] = 1
            cache = cache_from_blocks(layers)
        mask = torch.cat([old_mask, new_mask], dim=1)
        positions = ((mask.cumsum(-1) - 1).clamp(min=0))[:, width:]
        if store is not None:
            store.computed_tokens += sum(len(n) for n in new)
        output = self._forward(ids, mask, positions, cache, logits_to_keep=max(keep))
        return output, mask, positions

    def _store_rows(
        self,
        cache: Any,
        mask: torch.Tensor,
        rows: Sequence[int],
        sequences: Sequence[list[int]],
        layout: SharedPrefixLayout | None = None,
    ) -> None:
        """Keep the keys and values of ``sequences`` (held by cache ``rows``) for reuse."""
        layers = plain_layers(cache) if self.prefix_store is not None else None
        if layers is None:
            return
        for row, sequence in zip(rows, sequences, strict=True):
            if layout is None:
                where = mask[row].nonzero().squeeze(-1)[: len(sequence)]
                kept = [(x.keys[row][:, where], x.values[row][:, where]) for x in layers]
            else:
                kept = layout.row_layers(layers, mask, row, len(sequence))
            self.prefix_store.add(sequence, kept)

    def _share_prefixes(self, prompts: Sequence[Sequence[int]]) -> None:
        """Compute once, and store, the prefixes that several prompts of this call share.

        The shared prefixes often share a beginning among themselves (a group's prompts all
        open with the same persona and dilemma, then subsets agree a little further); that
        is computed first, so each of them only computes its own tail.
        """
        store = self.prefix_store
        wanted = [
            p
            for p in shared_prefixes(prompts, self.min_shared_prefix)
            if len(p) - store.longest(p)[1] >= self.min_shared_prefix
        ]
        if len(wanted) > 1:
            self._share_prefixes(wanted)
        for start in range(0, len(wanted), self.max_batch_size):
            batch = wanted[start : start + self.max_batch_size]
            output, mask, _ = self._prefill(batch)
            self._store_rows(_output_cache(output), mask, range(len(batch)), batch)

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(
        self, conversations: Sequence[Conversation], settings: GenerationSettings
    ) -> list[Generation]:
        """One generation per conversation, in order; see :class:`Generation` for the fields."""
        if not conversations:
            return []
        prompts = self.encode([self.render(c) for c in conversations])
        return self.generate_from_ids(prompts, settings)

    @torch.inference_mode()
    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], settings: GenerationSettings
    ) -> list[Generation]:
        """Like :meth:`generate` for prompts already tokenised.

        Raises :class:`ContextLengthError` before any computation when a prompt and
        ``max_new_tokens`` together exceed the model's positions (the model would run for
        long and its output past the context would be meaningless)."""
        self._check_fits(prompts, settings.max_new_tokens)
        results: list[Generation | None] = [None] * len(prompts)
        generator = None
        if settings.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        if self.prefix_store is not None:
            self.prefix_store.prompt_tokens += sum(len(p) for p in prompts)
            if len(prompts) > 1:
                self._share_prefixes(prompts)
        for batch in self._batches([len(p) for p in prompts]):
            self._check_cancelled()
            plan = self._group_plan([prompts[i] for i in batch])
            if plan is not None:
                batch = [batch[i] for i in plan.order]
            generations = self._decode([prompts[i] for i in batch], settings, generator, plan)
            for index, generation in zip(batch, generations, strict=True):
                results[index] = generation
        return results  # type: ignore[return-value]

    def _check_fits(self, prompts: Sequence[Sequence[int]], new_tokens: int) -> None:
        limit = self.context_length
        longest = max((len(p) for p in prompts), default=0)
        if limit is not None and longest + new_tokens > limit:
            raise ContextLengthError(
                f"{self.name}: a prompt of {longest} tokens plus max_new_tokens={new_tokens} "
                f"exceeds the model's context of {limit} tokens; shorten the conversation "
                f"(e.g. fewer context turns) or ask for fewer new tokens"
            )

    def _group_plan(self, prompts: Sequence[Sequence[int]]) -> GroupPlan | None:
        """How the rows of a micro-batch share prefixes, if decoding should use it."""
        if not self.shared_prefix_attention or len(prompts) < 2:
            return None
        if not supports_shared_prefix(self.model):
            return None
        return plan_groups(prompts, self.min_shared_prefix)

    def _sample(
        self,
        logits: torch.Tensor,
        settings: GenerationSettings,
        generator: Any,
        banned: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next token of each row and its log-probability under logits / temperature.

        ``banned`` (rows x vocabulary, True = may not be drawn) truncates the distribution
        like top-k and top-p do: the reported log-probability is the untruncated one."""
        logits = logits.float()
        temperature = settings.temperature if settings.temperature > 0 else 1.0
        log_probs = torch.log_softmax(logits / temperature, dim=-1)
        allowed = log_probs if banned is None else log_probs.masked_fill(banned, float("-inf"))
        if settings.temperature == 0:
            tokens = allowed.argmax(dim=-1)
        else:
            filtered = allowed
            if settings.top_k and settings.top_k < filtered.shape[-1]:
                kth = torch.topk(filtered, settings.top_k, dim=-1).values[:, -1:]
                filtered = filtered.masked_fill(filtered < kth, float("-inf"))
            if settings.top_p < 1.0:
                probabilities, candidates = self._nucleus(filtered, settings.top_p)
                choice = torch.multinomial(probabilities, 1, generator=generator)
                tokens = candidates.gather(-1, choice).squeeze(-1)
            else:
                tokens = torch.multinomial(filtered.softmax(dim=-1), 1, generator=generator)
                tokens = tokens.squeeze(-1)
        return tokens, log_probs.gather(-1, tokens[:, None]).squeeze(-1)

    def _nucleus(self, log_probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
        """What top-p sampling draws from: candidate tokens, most likely first, and their
        probabilities, zero for those it drops (a token is dropped when the more likely
        tokens before it already hold ``top_p`` of the probability).

        Sorting the whole vocabulary every step is costly (about 14 ms for 8 rows of 49k on
        2 cores, against under 1 ms for a top-256); when the ``top_p_shortlist`` most likely
        tokens of every row already hold ``top_p``, every token beyond them is dropped
        anyway, so the candidates are the shortlist and the draw never touches the rest of
        the vocabulary. Otherwise (or with ``top_p_shortlist = 0``) the whole vocabulary is
        sorted.
        """
        normaliser = torch.logsumexp(log_probs, dim=-1, keepdim=True)
        size = min(self.top_p_shortlist, log_probs.shape[-1])
        values = candidates = None
        if size > 0:
            values, candidates = torch.topk(log_probs, size, dim=-1)
            if bool(((values - normaliser).exp().sum(dim=-1) < top_p).any()):
                values = None  # the shortlist misses part of some row's nucleus
        if values is None:
            values, candidates = torch.sort(log_probs, dim=-1, descending=True)
        probabilities = (values - normaliser).exp()
        kept = probabilities.cumsum(dim=-1) - probabilities < top_p
        # only as many candidates as the widest nucleus: the same tensors whichever path
        # found them, hence the same draw from the same generator
        width = int(kept.sum(dim=-1).max())
        return probabilities[:, :width].masked_fill(~kept[:, :width], 0.0), candidates[:, :width]

    def _decode(
        self,
        prompts: Sequence[Sequence[int]],
        settings: GenerationSettings,
        generator: Any,
        plan: GroupPlan | None = None,
    ) -> list[Generation]:
        """Sample up to ``max_new_tokens`` for each prompt with a KV cache.

        Rows that finish are dropped from the cache and the batch (when at least a quarter of
        the running rows have finished, so the copy pays for itself): later steps cost only
        what the unfinished rows need. ``self.drop_finished = False`` keeps every row to the
        end (the plain loop; under greedy decoding both give the same tokens). Inside
        :meth:`prefix_caching`, prompts start from stored prefixes and every row's prompt and
        generation is stored when it leaves the batch. With a ``plan`` (rows in its order),
        the decode steps keep each group's shared prefix once (:mod:`shared_prefix`).
        """
        output, mask, positions = self._prefill(prompts)
        rows = len(prompts)
        logits, cache = output.logits[:, -1, :], _output_cache(output)
        del output  # the split below frees the per-row cache only if nothing else holds it
        split = split_cache(cache, mask, plan, settings.max_new_tokens) if plan else None
        layout = None
        if split is not None:
            layout, cache, mask = split
        else:
            cache = reserve_room(cache, settings.max_new_tokens)
        stop_ids = torch.tensor(self.stop_token_ids, device=self.device)
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)
        running = torch.arange(rows, device=self.device)  # the rows still in the cache
        lengths = torch.full((rows,), settings.max_new_tokens, dtype=torch.long)
        stopped_by_text = [False] * rows
        tokens_per_step, logprobs_per_step = [], []
        next_position = positions[:, -1:] + 1
        repeats = NgramBan(rows, settings.no_repeat_ngram_size)
        for step in range(settings.max_new_tokens):
            self._check_cancelled()
            banned = repeats.mask(running, logits.shape[-1], logits.device)
            sampled, sampled_logprobs = self._sample(logits, settings, generator, banned)
            tokens = torch.full((rows,), self.pad_token_id, dtype=torch.long, device=self.device)
            logprobs = torch.zeros(rows, dtype=sampled_logprobs.dtype, device=self.device)
            tokens[running] = sampled
            logprobs[running] = sampled_logprobs
            tokens = tokens.masked_fill(finished, self.pad_token_id)
            repeats.add(running, tokens)
            tokens_per_step.append(tokens)
            logprobs_per_step.append(logprobs)
            was_finished = finished
            finished = finished | torch.isin(tokens, stop_ids)
            if settings.stop:
                finished = finished | self._hit_stop_strings(
                    tokens_per_step, finished, settings.stop, stopped_by_text
                )
            lengths[finished & ~was_finished] = step + 1
            if bool(finished.all()) or step == settings.max_new_tokens - 1:
                break
            keep = ~finished[running]
            if self.drop_finished and int(keep.sum()) <= 0.75 * len(running):
                kept = keep.nonzero().squeeze(-1)
                leaving = (~keep).nonzero().squeeze(-1).tolist()
                self._store_processed(
                    cache, mask, leaving, running, prompts, tokens_per_step, lengths, step, layout
                )
                cache.batch_select_indices(kept)
                if layout is not None:
                    layout.select(kept)
                mask, next_position, running = mask[kept], next_position[kept], running[kept]
            mask = torch.cat(
                [mask, torch.ones((len(running), 1), dtype=mask.dtype, device=self.device)], dim=1
            )
            output = self._forward(tokens[running][:, None], mask, next_position, cache, layout)
            cache = _output_cache(output)
            logits = output.logits[:, -1, :]
            next_position = next_position + 1
        self._store_processed(
            cache,
            mask,
            range(len(running)),
            running,
            prompts,
            tokens_per_step,
            lengths,
            step,
            layout,
        )
        return self._collect(
            prompts, tokens_per_step, logprobs_per_step, settings, stopped_by_text, lengths.tolist()
        )

    def _store_processed(
        self,
        cache: Any,
        mask: torch.Tensor,
        cache_rows: Sequence[int],
        running: torch.Tensor,
        prompts: Sequence[Sequence[int]],
        steps: list[torch.Tensor],
        lengths: torch.Tensor,
        fed: int,
        layout: SharedPrefixLayout | None = None,
    ) -> None:
        """Store what the cache holds for ``cache_rows``: the prompt and the generated tokens
        fed back so far (``fed`` steps, fewer for a row that finished earlier)."""
        if self.prefix_store is None or not cache_rows:
            return
        generated = torch.stack(steps[:fed], dim=1).tolist() if fed else None
        sequences = []
        for cache_row in cache_rows:
            row = int(running[cache_row])
            kept = generated[row][: min(fed, int(lengths[row]))] if generated else []
            sequences.append(list(prompts[row]) + kept)
        self._store_rows(cache, mask, cache_rows, sequences, layout)

    def _hit_stop_strings(
        self,
        steps: list[torch.Tensor],
        finished: torch.Tensor,
        stops: Sequence[str],
        stopped_by_text: list[bool],
    ) -> torch.Tensor:
        hit = torch.zeros_like(finished)
        generated = torch.stack(steps, dim=1).tolist()
        for row, done in enumerate(finished.tolist()):
            if done:
                continue
            text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
            if any(stop in text for stop in stops):
                hit[row] = True
                stopped_by_text[row] = True
        return hit

    def _collect(
        self,
        prompts: Sequence[Sequence[int]],
        steps: list[torch.Tensor],
        step_logprobs: list[torch.Tensor],
        settings: GenerationSettings,
        stopped_by_text: list[bool],
        lengths: list[int],
    ) -> list[Generation]:
        """Each row's tokens up to and including the step it finished at."""
        tokens = torch.stack(steps, dim=1).tolist()
        logprobs = torch.stack(step_logprobs, dim=1).tolist()
        stop_set = set(self.stop_token_ids)
        generations = []
        for row, prompt in enumerate(prompts):
            kept, kept_logprobs, reason = [], [], "length"
            length = lengths[row]
            for token, logprob in zip(tokens[row][:length], logprobs[row][:length], strict=True):
                kept.append(token)
                kept_logprobs.append(logprob)
                if token in stop_set:
                    reason = "stop"
                    break
            text_ids = kept[:-1] if reason == "stop" else kept
            text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
            if stopped_by_text[row]:
                reason = "stop"
                text = _cut_at_stop(text, settings.stop)
            generations.append(
                Generation(
                    text=text.strip(),
                    finish_reason=reason,
                    token_ids=kept,
                    logprobs=kept_logprobs if settings.logprobs else None,
                    prompt_token_ids=list(prompt),
                )
            )
        return generations

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def sequence_logprobs(
        self,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        temperature: float = 1.0,
    ) -> list[list[float]]:
        """log p(completion token | prompt, earlier completion tokens) for each pair.

        Only the completion positions are projected onto the vocabulary (a batch of whole
        sequences' logits would take gigabytes), in forwards of about 256 MB of logits; the
        prompts' shared prefixes (a judge scoring one text after several instructions about
        the same dilemma) are computed once.
        """
        sequences = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
        results: list[list[float] | None] = [None] * len(sequences)
        scale = temperature if temperature > 0 else 1.0
        vocabulary = self.model.get_output_embeddings().weight.shape[0]
        with self.prefix_caching():
            if self.prefix_store is not None and len(prompt_ids) > 1:
                self._share_prefixes([list(p) for p in prompt_ids])
            for group in self._batches([len(s) for s in sequences]):
                longest = max(len(completion_ids[i]) for i in group)
                rows = max(1, 2**26 // ((longest + 1) * vocabulary))
                for start in range(0, len(group), rows):
                    batch = group[start : start + rows]
                    scored = self._completion_logprobs(
                        [sequences[i] for i in batch],
                        [len(completion_ids[i]) for i in batch],
                        scale,
                    )
                    for index, values in zip(batch, scored, strict=True):
                        results[index] = values
        return results  # type: ignore[return-value]

    def _completion_logprobs(
        self, sequences: Sequence[Sequence[int]], lengths: Sequence[int], scale: float
    ) -> list[list[float]]:
        """Each sequence's last ``lengths[i]`` tokens' log-probabilities (one forward pass)."""
        longest = max(lengths)
        if longest == 0:
            return [[] for _ in sequences]
        # the position before each completion token predicts it: keep n + 1 positions
        output, _, _ = self._prefill(sequences, keep=[n + 1 for n in lengths])
        log_probs = torch.log_softmax(output.logits[:, :-1].float() / scale, dim=-1)
        # each row's last ``longest`` tokens, left-padded when the whole row is shorter (only
        # its last ``lengths[i]`` targets are read)
        tails = torch.tensor(
            [([0] * longest + list(s))[-longest:] for s in sequences], device=self.device
        )
        targets = log_probs[:, -longest:].gather(-1, tails[:, :, None]).squeeze(-1)
        return [targets[row, longest - n :].tolist() if n else [] for row, n in enumerate(lengths)]

    def continuation_logprobs(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        assistant_prefix: str = "",
    ) -> list[float]:
        """log p(continuation) after each rendered conversation (and prefix): sums over tokens."""
        prompts = self.encode([self.render(c, assistant_prefix) for c in conversations])
        completions = self.encode(list(continuations))
        return [sum(values) for values in self.sequence_logprobs(prompts, completions)]

    @torch.inference_mode()
    def next_token_logprobs(
        self,
        conversations: Sequence[Conversation],
        candidates: Sequence[str],
        assistant_prefix: str = "",
    ) -> list[dict[str, float]]:
        """log p(first token of each candidate) as the assistant's next token, per conversation.

        Prompts that share a prefix (a judge asking several questions about one text puts
        the text first) have it computed once: the call runs inside a prefix-caching scope.
        """
        candidate_ids = []
        for candidate in candidates:
            ids = self.tokenizer(candidate, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"candidate {candidate!r} encodes to no tokens")
            candidate_ids.append(ids[0])
        prompts = self.encode([self.render(c, assistant_prefix) for c in conversations])
        results: list[dict[str, float] | None] = [None] * len(prompts)
        index_tensor = torch.tensor(candidate_ids, device=self.device)
        with self.prefix_caching():
            if self.prefix_store is not None and len(prompts) > 1:
                self._share_prefixes(prompts)
            for batch in self._batches([len(p) for p in prompts]):
                output, _, _ = self._prefill([prompts[i] for i in batch])
                log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)[:, index_tensor]
                for row, index in enumerate(batch):
                    results[index] = dict(zip(candidates, log_probs[row].tolist(), strict=True))
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def next_token_top_logprobs(
        self, conversations: Sequence[Conversation], k: int, assistant_prefix: str = ""
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely next tokens (text, log-probability) as the assistant's next
        token, per conversation, most likely first (an OpenAI ``top_logprobs`` list)."""
        prompts = self.encode([self.render(c, assistant_prefix) for c in conversations])
        results: list[list[tuple[str, float]] | None] = [None] * len(prompts)
        for batch in self._batches([len(p) for p in prompts]):
            output, _, _ = self._prefill([prompts[i] for i in batch])
            log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
            values, ids = torch.topk(log_probs, k, dim=-1)
            for row, index in enumerate(batch):
                results[index] = [
                    (self.tokenizer.decode([token]), value)
                    for token, value in zip(ids[row].tolist(), values[row].tolist(), strict=True)
                ]
        return results  # type: ignore[return-value]


class NgramBan:
    """What ``no_repeat_ngram_size`` forbids next in each row of a decode: the token that
    would complete an n-gram the row has already generated (its prompt is not counted).

    For every row it keeps, per (n-1)-token context, the tokens that followed it; a step's
    ban is a lookup of the last n-1 tokens. ``size`` 0 bans nothing and reads nothing back
    from the tensors it is given (the decode loop calls it every step either way)."""

    def __init__(self, rows: int, size: int):
        self.size = size
        self.history: list[list[int]] = [[] for _ in range(rows)]
        self.followers: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(rows)]

    def _context(self, row: int) -> tuple[int, ...] | None:
        history = self.history[row]
        if len(history) < self.size - 1:
            return None
        return tuple(history[len(history) - self.size + 1 :])

    def mask(self, rows: torch.Tensor, vocabulary: int, device: Any) -> torch.Tensor | None:
        """len(rows) x vocabulary, True where a token is banned for that row; None when
        nothing is. ``rows`` are the decode's row numbers, in batch order."""
        if self.size == 0:
            return None
        banned = None
        for position, row in enumerate(rows.tolist()):
            context = self._context(row)
            tokens = self.followers[row].get(context, ()) if context is not None else ()
            if tokens:
                if banned is None:
                    banned = torch.zeros(len(rows), vocabulary, dtype=torch.bool, device=device)
                banned[position, list(tokens)] = True
        return banned

    def add(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Each of ``rows`` generated its entry of ``tokens`` (one per row of the decode)."""
        if self.size == 0:
            return
        for row, token in zip(rows.tolist(), tokens[rows].tolist(), strict=True):
            context = self._context(row)
            if context is not None:
                self.followers[row].setdefault(context, set()).add(token)
            self.history[row].append(token)


def end_of_turn_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """The tokens a turn ends at: the tokenizer's end of sequence, the model's own (its
    generation config's, an id or a list, when ``model`` is given), and the chat templates'
    end-of-turn tokens (:data:`END_OF_TURN_TOKENS`) the vocabulary has."""
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set()
    for value in (config_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    vocabulary = tokenizer.get_vocab()
    ids.update(vocabulary[token] for token in END_OF_TURN_TOKENS if token in vocabulary)
    return sorted(ids)


def check_adapter_fits(model: torch.nn.Module, folder: Path) -> None:
    """Raise ValueError unless every weight of the LoRA adapter in ``folder`` has a layer of
    the right shape in ``model`` (e.g. an adapter trained on another base model), so that a
    misfit is refused before peft changes the model."""
    from peft.utils import load_peft_weights

    layers = dict(model.named_modules())
    for key, tensor in load_peft_weights(str(folder), device="cpu").items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        path = key.removeprefix("base_model.model.").split(".lora_")[0]
        layer = layers.get(path)
        if layer is None:
            raise ValueError(
                f"{folder}: its weight {key} has no layer {path!r} in the served model: the "
                "adapter was trained on another model"
            )
        if not hasattr(layer, "in_features") or tensor.dim() != 2:
            continue  # an embedding or a convolution: existence is what can be checked
        wanted = layer.in_features if ".lora_A." in key else layer.out_features
        given = tensor.shape[1] if ".lora_A." in key else tensor.shape[0]
        if given != wanted:
            raise ValueError(
                f"{folder}: its weight {key} is for a layer of {given} features, the served "
                f"model's {path!r} has {wanted}: the adapter was trained on another model"
            )


def render_chat(tokenizer: Any, conversation: Conversation, assistant_prefix: str = "") -> str:
    """``tokenizer``'s chat template applied to ``conversation``, ready for the assistant to
    speak (base models without a template: a plain transcript)."""
    messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return text + assistant_prefix


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of rendered prompts (the template already holds the special tokens)."""
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text[:cut] if cut >= 0 else text
