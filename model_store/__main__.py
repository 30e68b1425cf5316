"""`python -m model_store [versions|show [VERSION]]`: look into a store without starting anything."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from model_store.store import DEFAULT_MODEL_NAME, DEFAULT_STORE_ROOT, ModelStore, ModelStoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store", description=__doc__)
    parser.add_argument(
        "--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", DEFAULT_STORE_ROOT))
    )
    parser.add_argument("--name", default=os.environ.get("MNIST_MODEL_NAME", DEFAULT_MODEL_NAME))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="print the published versions, one a line, oldest first")
    show = commands.add_parser("show", help="print a version's metadata.json (default: newest)")
    show.add_argument("version", nargs="?")
    args = parser.parse_args(argv)

    store = ModelStore(args.store, args.name)
    try:
        if args.command == "versions":
            for version in store.versions():
                sys.stdout.write(f"{version}\n")
        else:
            metadata = store.read_metadata(store.resolve(args.version))
            sys.stdout.write(metadata.model_dump_json(indent=2) + "\n")
    except ModelStoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
