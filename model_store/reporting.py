"""How every command-line entry point reports a user mistake or an environment problem.

One line on stderr (what is wrong, where, what to do) and a non-zero exit: a user should never have
to read a traceback to learn that a file is missing or a setting is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

from pydantic import ValidationError

from model_store.mnist_data import DatasetError
from model_store.settings import describe_settings_error
from model_store.store import ModelStoreError

# What to do about MNIST files that cannot be read or downloaded.
DATA_HINT = (
    "set MNIST_DATA_DIR or --data-dir to a folder holding the four official MNIST .gz files "
    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz)"
)
USER_ERROR_EXIT = 1

S = TypeVar("S")


def fail(prog: str, message: str, status: int = USER_ERROR_EXIT) -> NoReturn:
    one_line = " ".join(message.split())
    sys.stderr.write(f"{prog}: error: {one_line}\n")
    raise SystemExit(status)


def load_settings(prog: str, load: Callable[[], S]) -> S:
    """The settings, or one line naming the `MNIST_*` variable that is wrong."""
    try:
        return load()
    except ValidationError as exc:
        fail(prog, describe_settings_error(exc))


@contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """Errors a user can fix become one line on stderr; anything else is a bug and keeps its traceback."""
    try:
        yield
    except DatasetError as exc:
        fail(prog, f"{exc}; {DATA_HINT}")
    except (ModelStoreError, OSError) as exc:
        fail(prog, str(exc))
