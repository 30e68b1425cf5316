"""Build the Dockerfile as written and run what it produces.

scripts/build-image.sh builds the image with buildah on a stand-in `python:3.11-slim` (docs/deployment.md).
Then, in a container of that image: the `train` command publishes a short real training into a
mounted store; the image's own CMD serves it, and 20 real MNIST test digits POSTed to /predict come
back with their labels; the server runs as uid 10001; nothing outside /models and /tmp is writable
for it; and the image's HEALTHCHECK command passes while it serves and fails once it is gone.
Skipped, with the reason, where buildah cannot run (not root, not Linux, tools not installed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench.digits import encode
from model_store.mnist_data import load_split
from tests.support.dockerfile import duration_seconds, parse_dockerfile
from tests.support.image import (
    Container,
    Image,
    build_image,
    cannot_build_reason,
    cmdline,
    container,
    process_tree,
    remove_image,
    uid_of,
)
from tests.support.live_server import free_port, spawn, stop, wait_ready

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(cannot_build_reason() is not None, reason=str(cannot_build_reason())),
]

APP_UID = 10001
READY_TIMEOUT_SECONDS = 180
# A short real training: the test fixture's recipe (~98 % on the test set), inside the image.
TRAIN_ARGS = ["--preset", "cnn", "--limit", "12000", "--epochs", "2", "--seed", "7", "--no-download"]
DIGITS = 20
SERVE_SCRIPT = "/opt/venv/bin/mnist-serve"
SERVING_TAG = "mnist-serve:test-serving"
SERVING_OPTIONS = ("--build-arg", "EXTRAS=")
FIND_TRAINING_PACKAGES = (
    "import importlib.util as u; print(*[n for n in ('tensorflow', 'keras', 'tf2onnx') if u.find_spec(n)])"
)
# What the serving image leaves out: uvicorn[standard]'s reloader, WebSockets and YAML config (the
# base dependencies name uvicorn, uvloop and httptools instead), and, in the Dockerfile's install
# step, the wheels' test suites, C headers, static libraries and Cython sources.
FIND_LEFT_OUT = """
import importlib.util, os, sysconfig
print(*[name for name in ("watchfiles", "websockets", "yaml") if importlib.util.find_spec(name)])
for root, dirs, files in os.walk(sysconfig.get_paths()["purelib"]):
    dirs[:] = [d for d in dirs if not d.endswith(".dist-info")]
    left = [d for d in dirs if d in ("tests", "include")]
    left += [f for f in files if f.endswith((".h", ".hpp", ".a", ".pyx", ".pxd"))]
    print(*[os.path.join(root, name) for name in left])
"""
# Paths a process may write: the store, the prediction log's SQLite folder (a volume in compose),
# /tmp, and the base image's other sticky world-writable folders (as in the official image;
# read-only under Kubernetes' readOnlyRootFilesystem).
WRITABLE = {"/models", "/data/records", "/tmp", "/var/tmp", "/run/lock"}
SCAN = """
import os
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for path in [root] + [os.path.join(root, f) for f in files]:
        if not os.path.islink(path) and os.access(path, os.W_OK):
            print(path)
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    built = build_image(tmp_path_factory.mktemp("image") / "build.log")
    base = "cached" if built.base_was_cached else "made by debootstrap"
    print(f"\nimage built in {built.build_seconds:.0f} s (base {base}), {built.size_bytes / 1e9:.2f} GB")
    yield built
    remove_image(built)  # several GB under the vfs driver; the next build reuses the base image only


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder for the `models` volume, owned by the image's user like a fresh named volume."""
    path = tmp_path_factory.mktemp("models-volume")
    os.chown(path, APP_UID, APP_UID)
    return path


@pytest.fixture(scope="module")
def box(image: Image, store: Path, mnist_dir: Path) -> Iterator[Container]:
    with container(image, [f"{store}:/models", f"{mnist_dir}:/data/mnist:ro"]) as box:
        yield box


def test_image_is_the_dockerfile_build(image: Image) -> None:
    final = parse_dockerfile()[-1]
    [cmd] = [i.value for i in final.instructions if i.name == "CMD"]
    assert image.config["Cmd"] == ["mnist-serve"] and cmd == '["mnist-serve"]'
    assert image.config["User"] == f"{APP_UID}:{APP_UID}"
    assert "/models" in image.config["Volumes"]
    # --format docker keeps the HEALTHCHECK (the OCI format has no such field).
    assert image.config["Healthcheck"]["Test"][:2] == ["CMD", "python"]


def test_a_build_leaves_no_untagged_images_behind(image: Image) -> None:
    # Each is a full copy of an image's tree under the vfs driver: rebuilds once filled the disk.
    assert image.untagged_after_build == []


def test_train_command_publishes_into_the_mounted_store(box: Container, store: Path) -> None:
    started = time.monotonic()
    result = box.run(["mnist-train", *TRAIN_ARGS, "--verbose", "0"], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"\ntraining in the image: {time.monotonic() - started:.0f} s")
    version = store / "mnist" / "1"
    assert (version / "model.keras").is_file() and (version / "metadata.json").is_file()
    assert version.stat().st_uid == APP_UID, "published by the image's user"


@contextmanager
def serving(image: Image, box: Container, log_path: Path) -> Iterator[Server]:
    """The image's CMD serving the mounted store on a free port until the block ends, then stopped
    by SIGTERM as `docker stop` does; the shutdown must be graceful."""
    port, grpc_port = free_port(), free_port()
    # As `docker run -e MNIST_PORT=...`: free ports on this host's network (the image binds 0.0.0.0),
    # gRPC's too, since other tests may serve on the image's default 8081 meanwhile.
    server = Server(f"http://127.0.0.1:{port}", {"MNIST_PORT": str(port), "MNIST_GRPC_PORT": str(grpc_port)})
    started = time.monotonic()
    spawned = spawn(box.command(image.config["Cmd"], server.env), port, log_path, new_session=True)
    process = spawned.process
    try:
        wait_ready(spawned, READY_TIMEOUT_SECONDS)
        server.cold_start_seconds = time.monotonic() - started
        print(f"\ncold start of {image.tag}'s CMD to ready: {server.cold_start_seconds:.1f} s")
        # The server: python running the image's console script (not buildah's own helpers).
        server.pids = [p for p in process_tree(process.pid) if is_python_running(cmdline(p), SERVE_SCRIPT)]
        assert server.pids, f"no {SERVE_SCRIPT} process under {process.pid}"
        yield server
    finally:
        # SIGTERM to the server itself, as `docker stop` sends it to the container's first process.
        stop(process, 60, targets=server.pids)
    log_text = log_path.read_text()
    assert "Application shutdown complete" in log_text, log_text[-3000:]


@dataclass
class Server:
    url: str
    env: dict[str, str]
    pids: list[int] = field(default_factory=list)
    cold_start_seconds: float = 0.0


def predicts_test_digits(url: str, mnist_dir: Path) -> None:
    test = load_split(mnist_dir, "test")
    for index in range(DIGITS):
        files = {"file": (f"digit-{index}.png", encode(test.images[index]), "image/png")}
        response = httpx.post(f"{url}/predict", files=files, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["prediction"] == int(test.labels[index]), f"test digit {index}: {body}"
        assert body["model"] == {"name": "mnist", "version": 1}


def needs_trained_version(store: Path) -> None:
    if not (store / "mnist" / "1").is_dir():
        pytest.skip("needs the version that test_train_command_publishes_into_the_mounted_store trains")


def test_image_command_serves_the_trained_model(
    image: Image, box: Container, store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    needs_trained_version(store)
    health = image.config["Healthcheck"]
    assert health["Test"][0] == "CMD"
    probe = health["Test"][1:]
    probe_timeout = health["Timeout"] / 1e9 + 10
    with serving(image, box, tmp_path / "server.log") as server:
        predicts_test_digits(server.url, mnist_dir)
        assert {uid_of(pid) for pid in server.pids} == {APP_UID}

        # The HEALTHCHECK command, run in the container like the engine runs it, passes.
        result = box.run(probe, server.env, timeout=probe_timeout)
        assert result.returncode == 0, result.stderr

        # Nothing outside the store and /tmp is writable for the image's user (data mounted read-only).
        scan = box.run(["python", "-c", SCAN], timeout=300)
        assert scan.returncode == 0, scan.stderr
        writable = set(scan.stdout.split())
        outside = {p for p in writable if not any(p == w or p.startswith(f"{w}/") for w in WRITABLE)}
        assert outside == set(), sorted(outside)[:20]
        assert {"/models", "/tmp"} <= writable
    # ... and fails once nothing answers.
    assert box.run(probe, server.env, timeout=probe_timeout).returncode != 0


# --- the serving image: --build-arg EXTRAS= -------------------------------------------------------------


@pytest.fixture(scope="module")
def serving_image(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    built = build_image(tmp_path_factory.mktemp("serving-image") / "build.log", SERVING_TAG, SERVING_OPTIONS)
    print(f"\nserving image built in {built.build_seconds:.0f} s: {built.size_bytes / 1e9:.2f} GB")
    yield built
    remove_image(built)


@pytest.fixture(scope="module")
def serving_box(serving_image: Image, store: Path, mnist_dir: Path) -> Iterator[Container]:
    # As `box`, with the data too: buildah 1.28 mounts the image's anonymous /models volume over a
    # lone --volume on the same path (with a second --volume it does not).
    with container(serving_image, [f"{store}:/models", f"{mnist_dir}:/data/mnist:ro"]) as box:
        yield box


def test_serving_image_has_no_tensorflow_and_a_fraction_of_the_size(
    image: Image, serving_image: Image, serving_box: Container
) -> None:
    found = serving_box.run(["python", "-c", FIND_TRAINING_PACKAGES])
    assert found.returncode == 0 and found.stdout.split() == [], found.stdout + found.stderr
    assert serving_image.size_bytes < 0.4 * image.size_bytes, (serving_image.size_bytes, image.size_bytes)
    assert serving_image.config["Cmd"] == image.config["Cmd"]
    assert serving_image.config["User"] == image.config["User"]


def test_serving_image_leaves_out_what_serving_does_not_use(serving_box: Container) -> None:
    found = serving_box.run(["python", "-c", FIND_LEFT_OUT])
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [], found.stdout[:3000]


def test_serving_image_serves_and_explains_by_occlusion(
    serving_image: Image, serving_box: Container, store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    needs_trained_version(store)
    with serving(serving_image, serving_box, tmp_path / "server.log") as server:
        predicts_test_digits(server.url, mnist_dir)
        digit = load_split(mnist_dir, "test").images[128]
        files = {"file": ("digit.png", encode(digit), "image/png")}
        answer = httpx.post(f"{server.url}/predict?explain=true", files=files, timeout=60).json()
        assert answer["prediction"] == 8
        assert answer["explanation"]["method"] == "occlusion" and answer["explanation"]["digit"] == 8


def test_training_in_the_serving_image_is_one_line_naming_the_full_image(serving_box: Container) -> None:
    result = serving_box.run(["mnist-train", "--no-download"])
    assert result.returncode == 1
    # buildah adds its own lines about the exit status; the program's own is one line, no traceback.
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("mnist-train")]
    assert line.startswith("mnist-train: error: training needs Keras and TensorFlow") and "full image" in line


def test_healthcheck_start_period_covers_the_cold_start() -> None:
    [check] = [i.value for i in parse_dockerfile()[-1].instructions if i.name == "HEALTHCHECK"]
    start_period = duration_seconds(check.split("--start-period=")[1].split()[0])
    assert start_period < READY_TIMEOUT_SECONDS


def is_python_running(command_line: str, script: str) -> bool:
    words = command_line.split()
    return bool(words) and Path(words[0]).name.startswith("python") and script in words
