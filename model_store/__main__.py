"""`python -m model_store [versions|show [VERSION]|clean-incomplete]`: look into a store (a folder
or `s3://bucket/prefix`); remove what a publisher that died left half-written. A version published
without the model.onnx the service runs gets it from `python -m training.onnx_export VERSION`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_store.reporting import fail, load_settings, one_line_errors
from model_store.settings import StoreSettings, add_store_arguments
from model_store.store import ModelStore

PROG = "python -m model_store"
# A publisher still uploading is not half-written: by default only what nobody touched for an hour.
DEFAULT_INCOMPLETE_AGE_SECONDS = 3600.0


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds (0 or more)")
    return value


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(PROG, StoreSettings)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_store_arguments(parser, settings)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="print the published versions, one a line, oldest first")
    show = commands.add_parser("show", help="print a version's metadata.json (default: newest)")
    show.add_argument("version", nargs="?")
    commands.add_parser(
        "clean-incomplete", help="remove half-written versions, printing each one removed"
    ).add_argument(
        "--older-than",
        type=seconds,
        default=DEFAULT_INCOMPLETE_AGE_SECONDS,
        metavar="SECONDS",
        help="only those untouched for this long, so a publish in progress is spared (default: 3600)",
    )
    args = parser.parse_args(argv)

    with one_line_errors(PROG):
        if isinstance(args.store, Path) and args.store.exists() and not args.store.is_dir():
            fail(PROG, f"model store {args.store} is a file, not a folder (--store or MNIST_MODEL_STORE)")
        store = ModelStore(args.store, args.name, settings.model_cache_dir)
        if args.command == "versions":
            for version in store.versions():
                sys.stdout.write(f"{version}\n")
        elif args.command == "clean-incomplete":
            for removed in store.clean_incomplete(args.older_than):
                sys.stdout.write(f"removed {removed}\n")
        else:
            metadata = store.read_metadata(store.resolve(args.version))
            sys.stdout.write(metadata.model_dump_json(indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
