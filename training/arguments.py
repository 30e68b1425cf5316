"""`mnist-train`'s arguments, every one checked before TensorFlow or the data is loaded."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from model_store.mnist_data import MNIST_FILES
from model_store.reporting import load_settings
from model_store.settings import StoreSettings
from model_store.storage import parse_location
from model_store.store import ModelStore, ModelStoreError, check_model_name, parse_version
from training.presets import PRECISIONS, PRESETS, Hyperparameters

PROG = "mnist-train"
TRAIN_IMAGES = MNIST_FILES["train", "labels"].count
N = TypeVar("N", int, float)
# A fine-tune's defaults: one pass over this many MNIST images (plus the corrections) stays within
# a few minutes on two cores, with or without bfloat16 instructions (docs/loop.md).
FINE_TUNE_EPOCHS = 1
FINE_TUNE_LIMIT = 20000
# `--quick`: seconds to a minute of fitting on two cores, about 97 % on the test set.
QUICK_LIMIT = 12_000
QUICK_EPOCHS = 1
# `--fine-tune-from serving`: the pinned version, else the newest the gate did not reject.
SERVING = "serving"


def _checked(convert: Callable[[str], N], rule: Callable[[N], bool], wanted: str) -> Callable[[str], N]:
    """An argparse type: `convert` the text, then refuse it unless `rule` holds."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if not rule(value):
            raise argparse.ArgumentTypeError(f"{text} is not {wanted}")
        return value

    return parse


positive_int = _checked(int, lambda v: v >= 1, "a whole number of at least 1")
seed_int = _checked(int, lambda v: v >= 0, "a whole number of at least 0")
training_images = _checked(
    int, lambda v: 1 <= v <= TRAIN_IMAGES, f"a number of images from 1 to {TRAIN_IMAGES}"
)
positive_float = _checked(float, lambda v: v > 0, "a number above 0")
share = _checked(float, lambda v: 0 <= v <= 1, "a share from 0 to 1")
count_int = seed_int
momentum = _checked(float, lambda v: 0 <= v < 1, "a momentum from 0 up to, not including, 1")
holdout_images = _checked(
    int, lambda v: 0 <= v < TRAIN_IMAGES, f"a number of images from 0 to {TRAIN_IMAGES - 1}"
)


def version_number(text: str) -> int:
    try:
        return parse_version(text)
    except ModelStoreError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def base_version(text: str) -> int | str:
    """A version number, or SERVING: whichever version the store serves when training starts."""
    if text == SERVING:
        return SERVING
    try:
        return parse_version(text)
    except ModelStoreError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a version number nor {SERVING!r}") from None


def model_name(text: str) -> str:
    try:
        return check_model_name(text)
    except ModelStoreError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(settings: StoreSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train a preset on MNIST, score it on the test set, and publish it."
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cnn")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir,
        help="folder with the four IDX .gz files (env MNIST_DATA_DIR; default data/mnist)",
    )
    parser.add_argument(
        "--store",
        type=parse_location,
        default=settings.model_store,
        help="model store root (env MNIST_MODEL_STORE)",
    )
    parser.add_argument("--name", type=model_name, default=settings.model_name, help="env MNIST_MODEL_NAME")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--learning-rate", type=positive_float)
    parser.add_argument(
        "--holdout",
        type=holdout_images,
        help="training images held out, never trained on: validation, calibration, thresholds (default 5000)",
    )
    parser.add_argument(
        "--corrupted", type=share, help="share of training digits corrupted afresh in every batch (cnn: 0.5)"
    )
    parser.add_argument(
        "--outliers",
        type=count_int,
        help="non-digits added to every batch with a uniform target, outlier exposure (cnn: 16)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="Keras dtype policy while training; auto: mixed_bfloat16 where the CPU computes bfloat16 "
        "natively (AVX512-BF16 or AMX, not capped by ONEDNN_MAX_CPU_ISA), else float32 (cnn: auto, "
        "seed: float32); the published model computes in float32",
    )
    parser.add_argument(
        "--weight-average",
        type=momentum,
        help="momentum of the weights' moving average, published instead of the last step's; 0 for none "
        "(cnn: 0.999)",
    )
    parser.add_argument("--seed", type=seed_int, help="random seed; the same seed gives the same run")
    parser.add_argument("--limit", type=training_images, help="train on a random subset of this many images")
    parser.add_argument(
        "--mirror",
        action="append",
        dest="mirrors",
        help="base URL to download missing files from (repeatable; default: public mirrors)",
    )
    parser.add_argument("--no-download", action="store_true", help="fail if files are missing")
    parser.add_argument("--download-only", action="store_true", help="fetch missing data files, then stop")
    parser.add_argument("--no-savedmodel", action="store_true", help="skip the TF SavedModel export")
    parser.add_argument(
        "--robustness",
        action="store_true",
        help="also score MNIST-C's corruptions and rendered uploads before publishing (a few minutes)",
    )
    corrections = parser.add_mutually_exclusive_group()
    corrections.add_argument(
        "--feedback",
        action="store_true",
        help="train on the users' corrections in the prediction log's database (env MNIST_DATABASE_URL) "
        "beside MNIST; a fifth of them, by prediction id, is held out for the gate",
    )
    corrections.add_argument(
        "--feedback-file",
        type=Path,
        metavar="FILE",
        help="the same from an export (`python -m app.records export --out FILE`) instead of the database",
    )
    parser.add_argument(
        "--min-new-corrections",
        type=positive_int,
        metavar="N",
        help="with --feedback: train only when at least N corrections arrived since those the serving "
        "version was trained on; else say so and exit 0 (for a schedule)",
    )
    parser.add_argument(
        "--fine-tune-from",
        type=base_version,
        metavar="VERSION",
        help=f"start from this published version's weights, or `{SERVING}`: the one the store serves now, "
        f"and train briefly (default: from scratch; {FINE_TUNE_EPOCHS} epoch over {FINE_TUNE_LIMIT} "
        "images at a tenth of the learning rate)",
    )
    parser.add_argument(
        "--gate-against",
        type=version_number,
        metavar="VERSION",
        help="the version the publish-time gate compares with (default: the pinned, else the newest)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a quick first model, marked quick in its metadata: {QUICK_LIMIT:,} images, "
        f"{QUICK_EPOCHS} epoch, no SavedModel (--limit and --epochs still apply)",
    )
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras verbosity")
    # Not an option: the database's URL holds a password, so it comes from the environment only.
    parser.set_defaults(database_url=settings.database_url)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, with defaults from `MNIST_*` variables and `.env`; a bad one exits with one line."""
    parser = build_parser(load_settings(PROG, StoreSettings))
    args = parser.parse_args(argv)
    if not args.download_only:
        try:
            ModelStore(args.store, args.name).check_writable()
        except ModelStoreError as exc:
            parser.error(f"--store (or MNIST_MODEL_STORE): {exc}")
    if args.fine_tune_from is not None and (args.seed is not None or args.holdout is not None):
        parser.error(
            "--seed and --holdout come from the version fine-tuned from, so its held-out digits stay unseen"
        )
    if args.min_new_corrections is not None and not args.feedback:
        parser.error("--min-new-corrections counts the corrections in the database: add --feedback")
    if args.data_dir.exists() and not args.data_dir.is_dir():
        parser.error(f"--data-dir (or MNIST_DATA_DIR): {args.data_dir} is a file, not a folder")
    if args.quick:
        args.limit = args.limit or QUICK_LIMIT
        args.epochs = args.epochs or QUICK_EPOCHS
        args.no_savedmodel = True
    return args


def hyperparameters_from(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Hyperparameters:
    """The preset's hyperparameters with the arguments' overrides. Fine-tuning from a version whose
    hyperparameters are `base`: a short run at a tenth of the learning rate, and the base's seed and
    held-out count, so its held-out digits are held out again."""
    defaults = PRESETS[args.preset].defaults
    if base is not None:
        defaults = dataclasses.replace(
            defaults,
            epochs=FINE_TUNE_EPOCHS,
            learning_rate=defaults.learning_rate / 10,
            seed=int(base["seed"]),
            holdout=int(base["holdout"]),
        )
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Hyperparameters)
        if getattr(args, field.name) is not None
    }
    return dataclasses.replace(defaults, **overrides)
