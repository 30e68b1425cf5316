"""Score a published model on corrupted MNIST test digits: MNIST-C's fifteen families and uploads.

python -m training.robustness --store models --version 3 --seed 0

Writes robustness.md and robustness.png into the version's folder and a `robustness` section into
its metadata.json (each replaced atomically), and prints the table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np

from app.inputs.normalisation import SERVICE_BACKGROUND, Background, normalise_decoded
from model_store.metadata import ROBUSTNESS_CHART_FILE, ROBUSTNESS_TABLE_FILE, ModelMetadata, Robustness
from model_store.mnist_data import load_split
from model_store.preprocessing import InputSpec, to_model_input
from model_store.reporting import load_settings, one_line_errors
from model_store.settings import StoreSettings
from model_store.storage import parse_location
from model_store.store import ModelStore, ModelStoreError, parse_version
from training.arguments import model_name, positive_int, seed_int
from training.report import (
    UPLOAD_FAMILY,
    comparison_table,
    plot_robustness,
    replaced_atomically,
    robustness_table,
)

if TYPE_CHECKING:
    import keras

    from training.corruptions import Corruption

PROG = "python -m training.robustness"
BATCH = 1000  # images per compiled forward pass
Classifier = Callable[[np.ndarray], np.ndarray]
log = logging.getLogger("training")


def families() -> dict[str, Corruption]:
    """MNIST-C's fifteen families, then uploads; imported late, so that --help stays fast."""
    from training.corruptions import MNIST_C
    from training.synthetic_photos import upload

    return MNIST_C | {UPLOAD_FAMILY: upload}


def classifier(model: keras.Model, spec: InputSpec) -> Classifier:
    """uint8 digits (N, 28, 28) -> predicted digits, through one compiled forward pass per batch."""
    import tensorflow as tf

    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, *spec.shape), tf.float32)],
    )

    def classify(images: np.ndarray) -> np.ndarray:
        x = to_model_input(images, spec)
        return np.concatenate(
            [np.argmax(forward(x[i : i + BATCH]).numpy(), axis=1) for i in range(0, len(x), BATCH)]
        )

    return classify


def benchmark(classify: Classifier, images: np.ndarray, labels: np.ndarray, seed: int) -> Robustness:
    """Accuracy on the clean images and on every family; each family draws from its own seeded stream."""
    started = time.perf_counter()
    clean = accuracy(classify, images, labels)
    scores: dict[str, float] = {}
    for index, (name, corrupt) in enumerate(families().items(), start=1):
        # [seed, index]: a family's images do not change when another family is added or changed.
        corrupted = corrupt(images, np.random.default_rng([seed, index]))
        scores[name] = accuracy(classify, corrupted, labels)
        log.info(f"{name}: {scores[name]:.2%}")
    mnist_c = {name: acc for name, acc in scores.items() if name != UPLOAD_FAMILY}
    return Robustness(
        seed=seed,
        images=len(labels),
        clean=clean,
        families=scores,
        mnist_c_mean=round(float(np.mean(list(mnist_c.values()))), 6),
        worst_family=min(mnist_c, key=lambda name: mnist_c[name]),
        seconds=round(time.perf_counter() - started, 1),
    )


def accuracy(classify: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    return round(float(np.mean(classify(images) == labels)), 6)


def upload_experiment(
    classify: Classifier, images: np.ndarray, labels: np.ndarray, seed: int, background: Background
) -> dict[str, float]:
    """Uploads read back with one background method: the benchmark's renderings, and plain PNGs."""
    from training.synthetic_photos import clean_upload, read_back, upload

    normaliser = partial(normalise_decoded, background=background)
    stream = list(families()).index(UPLOAD_FAMILY) + 1  # the benchmark's own upload images
    rendered = upload(images, np.random.default_rng([seed, stream]), normaliser)
    plain = np.stack([read_back(clean_upload(digit), normaliser) for digit in images])
    return {"upload": accuracy(classify, rendered, labels), "clean_upload": accuracy(classify, plain, labels)}


def write_report(folder: Path, robustness: Robustness, title: str) -> dict[str, str]:
    """The table and the chart, written atomically into `folder`; returns their `files` roles."""
    with replaced_atomically(folder / ROBUSTNESS_TABLE_FILE) as tmp:
        tmp.write_text(robustness_table(robustness, title))
    plot_robustness(robustness, folder / ROBUSTNESS_CHART_FILE)
    return {"robustness": ROBUSTNESS_CHART_FILE, "robustness_table": ROBUSTNESS_TABLE_FILE}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    settings = load_settings(PROG, StoreSettings)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=parse_location, default=settings.model_store, help="env MNIST_MODEL_STORE"
    )
    parser.add_argument("--name", type=model_name, default=settings.model_name, help="env MNIST_MODEL_NAME")
    parser.add_argument("--version", type=version_number, help="default: the newest version")
    parser.add_argument("--seed", type=seed_int, default=0, help="the same seed gives the same images")
    parser.add_argument("--limit", type=positive_int, help="only the first LIMIT test images")
    parser.add_argument("--data-dir", type=Path, default=settings.data_dir, help="env MNIST_DATA_DIR")
    parser.add_argument(
        "--compare",
        type=versions_list,
        metavar="V1,V2,...",
        help="print one table of these versions' recorded results instead of running the benchmark",
    )
    parser.add_argument(
        "--uploads-only",
        action="store_true",
        help="only score uploads (rendered and plain) and print the scores; nothing is written",
    )
    parser.add_argument(
        "--background",
        choices=get_args(Background),
        default=SERVICE_BACKGROUND,
        help="with --uploads-only: the normalisation's background method to try (default: the service's)",
    )
    args = parser.parse_args(argv)
    if args.background != SERVICE_BACKGROUND and not args.uploads_only:
        parser.error("--background needs --uploads-only: the recorded benchmark uses the service's method")
    try:
        store = ModelStore(args.store, args.name)
        args.version = store.resolve(args.version)
        for version in args.compare or []:
            if store.read_metadata(store.resolve(version)).robustness is None:
                parser.error(f"--compare: version {version} has no robustness results; benchmark it first")
        store.check_writable()
    except ModelStoreError as exc:
        parser.error(f"--store/--version: {exc}")
    return args


def version_number(text: str) -> int:
    try:
        return parse_version(text)
    except ModelStoreError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def versions_list(text: str) -> list[int]:
    return [version_number(part) for part in text.split(",")]


def column_title(metadata: ModelMetadata) -> str:
    epochs = metadata.training.hyperparameters.get("epochs")
    return f"v{metadata.version} {metadata.training.preset}" + (f", {epochs} epochs" if epochs else "")


def compare(store: ModelStore, versions: list[int]) -> str:
    found = [store.read_metadata(version) for version in versions]
    return comparison_table([(column_title(m), m.robustness) for m in found if m.robustness is not None])


@one_line_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    store = ModelStore(args.store, args.name)
    if args.compare:
        sys.stdout.write(compare(store, args.compare))
        return 0
    test = load_split(args.data_dir, "test")
    images, labels = test.images[: args.limit], test.labels[: args.limit]
    loaded = store.load(args.version)
    classify = classifier(loaded.model, loaded.metadata.input)
    if args.uploads_only:
        scores = upload_experiment(classify, images, labels, args.seed, args.background)
        shown = " ".join(f"{name}={score:.2%}" for name, score in scores.items())
        sys.stdout.write(f"v{loaded.version} background={args.background} {shown}\n")
        return 0
    robustness = benchmark(classify, images, labels, args.seed)
    title = f"{loaded.name} v{loaded.version} ({loaded.metadata.training.preset})"
    files = loaded.metadata.files | write_report(loaded.path, robustness, title)
    store.update_metadata(loaded.metadata.model_copy(update={"robustness": robustness, "files": files}))
    sys.stdout.write(robustness_table(robustness, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
