"""`python -m model_store [versions|show [VERSION]|export-onnx VERSION]`: look into a store; give an
older version the model.onnx the service runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_store.reporting import fail, load_settings, one_line_errors
from model_store.settings import StoreSettings
from model_store.store import ModelStore

PROG = "python -m model_store"


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(PROG, StoreSettings)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--store", type=Path, default=settings.model_store, help="env MNIST_MODEL_STORE")
    parser.add_argument("--name", default=settings.model_name, help="env MNIST_MODEL_NAME")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="print the published versions, one a line, oldest first")
    show = commands.add_parser("show", help="print a version's metadata.json (default: newest)")
    show.add_argument("version", nargs="?")
    commands.add_parser(
        "export-onnx", help="write model.onnx into a version published before the export existed"
    ).add_argument("version")
    args = parser.parse_args(argv)

    with one_line_errors(PROG):
        if args.store.exists() and not args.store.is_dir():
            fail(PROG, f"model store {args.store} is a file, not a folder (--store or MNIST_MODEL_STORE)")
        store = ModelStore(args.store, args.name)
        if args.command == "versions":
            for version in store.versions():
                sys.stdout.write(f"{version}\n")
        elif args.command == "export-onnx":
            version = store.resolve(args.version)
            onnx = store.export_onnx(version).onnx
            sys.stdout.write(f"{store.version_path(version)}: {onnx}\n")
        else:
            metadata = store.read_metadata(store.resolve(args.version))
            sys.stdout.write(metadata.model_dump_json(indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
