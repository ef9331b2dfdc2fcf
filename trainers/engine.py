"""The server rollout engine: generation on inference servers, weights sent as LoRA adapters.

With ``rollout.engine: server`` every batched generation of a rollout goes to the servers
of ``rollout.servers`` through :class:`~llm.rollout_servers.ServerPool` (token ids in,
sampled token ids and log-probabilities out), and the weights reach the servers by LoRA
hot-swap: before the first rollout of a step (every ``rollout.sync_every`` steps) the
trained adapter is saved atomically under ``rollout.adapter_dir`` and every server loads it
under a new name, which later requests name; the previous one is unloaded. A server that
cannot load it stops training with the server's reason, so nothing is sampled from an
adapter older than the configuration allows.

The trainer corrects for the difference between the policy that sampled and the one it
trains (a server's numerics, or an older adapter) as TRL does for vLLM generations:
per-token importance ratios, truncated at ``rollout.importance_sampling_cap``, multiply the
loss, and their statistics are logged (``sampling/importance_sampling_ratio/*``,
``sampling/sampling_logp_difference/*``).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from llm.interface import BackendError
from llm.rollout_servers import ServerPool
from trainers.config import TrainConfig

KEEP_ADAPTERS = 2  # the one the servers use and the one before (a server may still read it)


class ServerEngine:
    """Sends the trainer's adapter to the rollout servers; :attr:`pool` generates.

    TRL calls :meth:`sync_weights` before the first rollout of every optimiser step (the
    hook it has for its vLLM engine)."""

    def __init__(
        self,
        config: TrainConfig,
        tokenizer: Any,
        pool: ServerPool | None = None,
        model: Any = None,
    ):
        rollout = config.rollout
        if pool is None:
            from llm.transformers_backend import end_of_turn_ids

            pool = ServerPool(
                rollout.servers,
                tokenizer,
                api_key_env=rollout.api_key_env,
                timeout=rollout.server_timeout,
                stop_token_ids=end_of_turn_ids(tokenizer, model),
            )
        self.pool = pool
        output = Path(config.run.output_dir)
        # adapter names and folders unique to this run, the same in every process of it (runs
        # may share adapter_dir and the servers)
        digest = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:8]
        self.prefix = f"policy-{digest}"
        self.folder = Path(rollout.adapter_dir or output / "rollout_adapters").resolve()
        if rollout.adapter_dir:
            self.folder = self.folder / self.prefix
        self.sync_every = rollout.sync_every
        self.trainer: Any = None  # set by the trainer that uses this engine
        self.loaded_step: int | None = None
        self.loaded: list[tuple[str, Path]] = []  # (name, folder), oldest first

    def sync_weights(self) -> None:
        """Load the current adapter on every server, unless the one there is recent enough
        (``sync_every``). In distributed training the main process saves and loads (and
        tells the others if that failed); every process then names the new adapter."""
        trainer = self.trainer
        step = trainer.state.global_step
        if self.loaded_step is not None and step - self.loaded_step < self.sync_every:
            return
        name = f"{self.prefix}-step-{step}"
        folder = self.folder / f"step-{step:06d}"
        failure = None
        if trainer.accelerator.is_main_process:
            try:
                if self.loaded_step is None:  # adapters of this run a killed launch left
                    self.pool.unload_matching(self.prefix)
                self._save(folder)
                self.pool.load_adapter(name, str(folder))
            except Exception as error:  # noqa: BLE001 - every process must hear of it
                failure = str(error) if isinstance(error, BackendError) else repr(error)
        failure = _shared(failure)
        if failure is not None:
            raise BackendError(failure)
        self.pool.adapter = name
        self.loaded_step = step
        self.loaded.append((name, folder))
        while len(self.loaded) > KEEP_ADAPTERS:
            old, old_folder = self.loaded.pop(0)
            if trainer.accelerator.is_main_process:
                self.pool.unload_adapter(old)
                shutil.rmtree(old_folder, ignore_errors=True)

    def _save(self, folder: Path) -> None:
        """The adapter in ``folder``, written beside it first: a server never reads half of it."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        staging = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)

    def close(self) -> None:
        """Unload this run's adapters from the servers (their folders stay); the main
        process does it, once."""
        if self.trainer is not None and self.trainer.accelerator.is_main_process:
            for name, _ in self.loaded:
                self.pool.unload_adapter(name)
        self.loaded.clear()


def _shared(value: str | None) -> str | None:
    """The main process's ``value`` in every process (itself without distributed training)."""
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]
