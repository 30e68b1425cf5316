"""What the serving image carries, and how fast it starts: per layer, per installed distribution, cold start.

python -m bench.image --build before=<commit> --build after=HEAD --store models --runs 5
python -m bench.image --image serving=mnist-serve:serving --store models

Each image is one already built (`--image LABEL=TAG`) or built here (`--build LABEL=GITREF`: the
serving image, `scripts/build-image.sh` with `--build-arg EXTRAS=`, from a clean `git worktree` of
that commit, so uncommitted changes are not in it). For each: its layers' sizes (the uncompressed
tars its manifest lists), what `/opt/venv` holds per installed distribution (the files each one's
RECORD lists and the image still has) and by kind of file (bytecode, test suites, headers, shared
libraries), the time `import app.main` takes in a container of it (with its bytecode, and without:
what `pip install --no-compile` would cost every start), and the cold start: from `buildah run` of
the image's CMD (chroot isolation, host network, the newest version of `--store` copied into a
`/models` volume, the MNIST files on `/data/mnist`) to `/readyz` answering 200, median of `--runs`.
Needs root, buildah and the storage `scripts/build-image.sh` keeps. Writes bench/results/image.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m bench.image"
BUILD_SCRIPT = ROOT / "scripts" / "build-image.sh"
BASE_IMAGE = "python:3.11-slim"
SITE_PACKAGES = PurePosixPath("opt/venv/lib/python3.11/site-packages")
APP_UID = 10001
READY_TIMEOUT_SECONDS = 180.0
IMPORT_APP = "import time; t = time.perf_counter(); import app.main; print(time.perf_counter() - t)"
# Kinds of file in site-packages, first match wins: a test suite's bytecode counts as test suite.
KINDS = ("test suites", "bytecode", "headers and static libraries", "shared libraries", "other")


@dataclass(frozen=True)
class Layer:
    size: int  # bytes of the uncompressed layer tar
    origin: str  # "base image" or "this Dockerfile"


@dataclass
class Measurement:
    label: str
    tag: str
    source: str  # where the image came from, e.g. "commit 1a2b3c4" or "tag mnist-serve:serving"
    layers: list[Layer]
    venv_bytes: int
    distributions: dict[str, int]  # "name version" -> bytes
    kinds: dict[str, int]
    import_seconds: list[float] = field(default_factory=list)
    import_seconds_no_bytecode: list[float] = field(default_factory=list)
    cold_start_seconds: list[float] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


# --- pure functions -------------------------------------------------------------------------------------


def labelled(text: str) -> tuple[str, str]:
    """LABEL=VALUE, as --image and --build take it."""
    label, sep, value = text.partition("=")
    if not sep or not label or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=VALUE")
    return label, value


def kind_of(relative: PurePosixPath) -> str:
    """Which of KINDS a file in site-packages is, by its path there."""
    parts = relative.parts
    name = relative.name
    if "tests" in parts[:-1] or "/".join(parts[:3]) == "onnx/backend/test":
        return "test suites"
    if "__pycache__" in parts or name.endswith(".pyc"):
        return "bytecode"
    if "include" in parts[:-1] or relative.suffix in {".h", ".hpp", ".a", ".pyx", ".pxd"}:
        return "headers and static libraries"
    if relative.suffix == ".so" or ".so." in name:
        return "shared libraries"
    return "other"


def layer_origins(layer_ids: list[str], base_ids: Iterable[str]) -> list[str]:
    """For each of an image's layers (its diff IDs): from the base image, or this Dockerfile's."""
    base = set(base_ids)
    return ["base image" if layer in base else "this Dockerfile" for layer in layer_ids]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f}"


def seconds(values: list[float]) -> str:
    """Median, then every run in order: '2.31 (2.9, 2.31, 2.2)'."""
    if not values:
        return "-"
    runs = ", ".join(f"{value:.2f}" for value in values)
    return f"{median(values):.2f} ({runs})"


def layer_count(measurement: Measurement) -> str:
    base = sum(layer.origin == "base image" for layer in measurement.layers)
    return f"{base} + {len(measurement.layers) - base}"


def top_distributions(measurements: list[Measurement], top: int) -> list[str]:
    """Names (without versions) of the `top` biggest distributions over all images, biggest first."""
    biggest: dict[str, int] = {}
    for measurement in measurements:
        for key, size in measurement.distributions.items():
            name = key.split()[0]
            biggest[name] = max(biggest.get(name, 0), size)
    return sorted(biggest, key=lambda name: (-biggest[name], name))[:top]


def size_of(measurement: Measurement, name: str) -> tuple[str, int] | None:
    """(version, bytes) of the distribution `name` in this image, or None if it has none."""
    for key, size in measurement.distributions.items():
        distribution, _, version = key.partition(" ")
        if distribution == name:
            return version, size
    return None


def render(measurements: list[Measurement], top: int, command: str, machine: str) -> str:
    """The Markdown report: one column per image."""
    head = "| | " + " | ".join(m.label for m in measurements) + " |"
    rule = "| --- |" + " ---: |" * len(measurements)

    def row(title: str, cells: Iterable[str]) -> str:
        return f"| {title} | " + " | ".join(cells) + " |"

    lines = [
        "# The serving image: size and cold start",
        "",
        f"{machine}. Command: `{command}`",
        "",
        "Images: " + "; ".join(f"{m.label}: {m.source}" for m in measurements) + ".",
        "",
        "## Size (MB)",
        "",
        head,
        rule,
        row("image (all layers)", (megabytes(m.size) for m in measurements)),
    ]
    for origin in ("base image", "this Dockerfile"):
        lines.append(
            row(
                f"layers from {origin}",
                (megabytes(sum(la.size for la in m.layers if la.origin == origin)) for m in measurements),
            )
        )
    lines.append(row("layers (base + this Dockerfile)", (layer_count(m) for m in measurements)))
    lines.append(row("`/opt/venv`", (megabytes(m.venv_bytes) for m in measurements)))
    lines.append(row("distributions in it", (str(len(m.distributions)) for m in measurements)))
    lines += ["", "### `/opt/venv` by kind of file (MB)", "", head, rule]
    for kind in KINDS:
        lines.append(row(kind, (megabytes(m.kinds.get(kind, 0)) for m in measurements)))
    lines += [
        "",
        f"### The {top} biggest installed distributions (MB; - where the image has none)",
        "",
        head,
        rule,
    ]
    for name in top_distributions(measurements, top):
        cells = []
        for measurement in measurements:
            found = size_of(measurement, name)
            cells.append(f"{megabytes(found[1])} ({found[0]})" if found else "-")
        lines.append(row(name, cells))
    lines += ["", "### Distributions in one image and not the other", ""]
    if len(measurements) >= 2:
        for before, after in itertools.pairwise(measurements):
            names_before = {key.split()[0] for key in before.distributions}
            names_after = {key.split()[0] for key in after.distributions}
            gone = ", ".join(sorted(names_before - names_after, key=str.lower)) or "none"
            new = ", ".join(sorted(names_after - names_before, key=str.lower)) or "none"
            lines.append(f"- {after.label} leaves out (vs {before.label}): {gone}; adds: {new}")
    else:
        lines.append("- (one image measured)")
    lines += [
        "",
        "## Start (seconds: median, then each run in order)",
        "",
        head,
        rule,
        row("`import app.main`", (seconds(m.import_seconds) for m in measurements)),
        row(
            "`import app.main` without bytecode",
            (seconds(m.import_seconds_no_bytecode) for m in measurements),
        ),
        row("cold start: `CMD` to `/readyz` 200", (seconds(m.cold_start_seconds) for m in measurements)),
        "",
    ]
    return "\n".join(lines)


# --- measuring ------------------------------------------------------------------------------------------


def storage_flags() -> list[str]:
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--storage-flags"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def buildah(*args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        ["buildah", *storage_flags(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args[:2])}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def diff_ids(tag: str) -> list[str]:
    inspected = json.loads(buildah("inspect", "--type", "image", tag))
    return list(inspected["OCIv1"]["rootfs"]["diff_ids"])


def layers_of(tag: str) -> list[Layer]:
    inspected = json.loads(buildah("inspect", "--type", "image", tag))
    sizes = [layer["size"] for layer in json.loads(inspected["Manifest"])["layers"]]
    origins = layer_origins(inspected["OCIv1"]["rootfs"]["diff_ids"], diff_ids(BASE_IMAGE))
    return [Layer(size, origin) for size, origin in zip(sizes, origins, strict=True)]


def regular_size(path: Path) -> int:
    try:
        info = path.lstat()
    except OSError:
        return 0  # listed in RECORD, left out of the image
    return info.st_size if path.is_file() and not path.is_symlink() else 0


def venv_contents(rootfs: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """(bytes of /opt/venv, bytes per "distribution version", bytes per kind of file in site-packages)."""
    site = rootfs / SITE_PACKAGES
    per_distribution: dict[str, int] = {}
    for distribution in importlib.metadata.distributions(path=[str(site)]):
        total = 0
        for listed in distribution.files or []:
            total += regular_size(site / Path(listed))
        name = distribution.metadata["Name"]
        per_distribution[f"{name} {distribution.version}"] = total
    kinds = dict.fromkeys(KINDS, 0)
    for path in site.rglob("*"):
        if path.is_file() and not path.is_symlink():
            kinds[kind_of(PurePosixPath(path.relative_to(site).as_posix()))] += path.lstat().st_size
    venv = sum(regular_size(path) for path in (rootfs / "opt" / "venv").rglob("*"))
    return venv, dict(sorted(per_distribution.items(), key=lambda item: -item[1])), kinds


@contextlib.contextmanager
def working_container(tag: str) -> Iterator[str]:
    name = buildah("from", "--pull=false", tag).strip()
    try:
        yield name
    finally:
        with contextlib.suppress(RuntimeError):
            buildah("rm", name)


def run_in(container: str, argv: list[str], mounts: list[str], env: dict[str, str]) -> list[str]:
    """The `buildah run` command line of argv in the container, as the tests run the image."""
    flags = ["--isolation", "chroot", "--network", "host"]
    flags += [f"--volume={mount}" for mount in mounts]
    flags += [f"--env={key}={value}" for key, value in env.items()]
    return ["buildah", *storage_flags(), "run", *flags, container, "--", *argv]


def import_times(container: str, runs: int, bytecode: bool) -> list[float]:
    argv = ["python", "-c", IMPORT_APP]
    if not bytecode:  # the bytecode is looked for (and, with PYTHONDONTWRITEBYTECODE, never written) there
        argv[1:1] = ["-X", "pycache_prefix=/tmp/no-bytecode"]
    found = []
    for _ in range(runs):
        done = subprocess.run(run_in(container, argv, [], {}), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"import app.main failed in the image: {done.stderr[-2000:]}")
        found.append(float(done.stdout.split()[-1]))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += descendants(int(child))
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server (the python processes under `buildah run`), as `docker stop` sends it."""
    servers = []
    for pid in descendants(process.pid):
        with contextlib.suppress(OSError):
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if words and Path(words[0].decode()).name.startswith("python"):
                servers.append(pid)
    for pid in servers or [process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def cold_start(container: str, cmd: list[str], mounts: list[str]) -> float:
    port = free_port()
    env = {"MNIST_PORT": str(port), "MNIST_GRPC_PORT": str(free_port())}
    started = time.monotonic()
    process = subprocess.Popen(
        run_in(container, cmd, mounts, env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.monotonic() - started < READY_TIMEOUT_SECONDS:
            if process.poll() is not None:
                raise RuntimeError(f"the image's CMD exited with {process.returncode} before /readyz")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response,
            ):
                if response.status == 200:
                    return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"/readyz did not answer 200 within {READY_TIMEOUT_SECONDS:.0f} s")
    finally:
        stop(process)


def contents(label: str, tag: str, source: str) -> Measurement:
    """An image's layers and what its /opt/venv holds (no timings yet)."""
    print(f"{label}: measuring {tag}", file=sys.stderr)
    with working_container(tag) as container:
        rootfs = Path(buildah("mount", container).strip())
        try:
            venv, distributions, kinds = venv_contents(rootfs)
        finally:
            buildah("umount", container)
    return Measurement(label, tag, source, layers_of(tag), venv, distributions, kinds)


def time_starts(measurements: list[Measurement], runs: int, mounts: list[str]) -> None:
    """Import times and cold starts, the images taking turns run by run, so that load from other
    processes falls on all of them alike."""
    with contextlib.ExitStack() as stack:
        containers = [stack.enter_context(working_container(m.tag)) for m in measurements]
        commands = [
            json.loads(buildah("inspect", "--type", "image", m.tag))["Docker"]["config"]["Cmd"]
            for m in measurements
        ]
        for run in range(runs):
            for measurement, container, cmd in zip(measurements, containers, commands, strict=True):
                measurement.import_seconds += import_times(container, 1, bytecode=True)
                measurement.import_seconds_no_bytecode += import_times(container, 1, bytecode=False)
                measurement.cold_start_seconds.append(cold_start(container, cmd, mounts))
                took = measurement.cold_start_seconds[-1]
                print(f"{measurement.label}: run {run + 1}: cold start {took:.2f} s", file=sys.stderr)


def build(label: str, ref: str) -> tuple[str, str]:
    """The serving image of git commit `ref`, built from a clean worktree of it: (tag, commit)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tag = f"mnist-serve:bench-{label}"
    with tempfile.TemporaryDirectory(prefix="bench-image-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True)
        try:
            print(f"{label}: building {tag} from {commit}", file=sys.stderr)
            subprocess.run(
                ["bash", str(tree / "scripts" / "build-image.sh"), tag, "--build-arg", "EXTRAS="],
                cwd=tree,
                check=True,
                stdout=sys.stderr,
            )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    return tag, commit


@contextlib.contextmanager
def volumes(store: Path, name: str, data_dir: Path) -> Iterator[list[str]]:
    """A copy of the newest version of `store` as the /models volume (owned by the image's user),
    and the MNIST files read-only on /data/mnist if there are any."""
    versions = sorted(
        (int(p.name) for p in (store / name).glob("*") if p.name.isdecimal() and p.is_dir()), reverse=True
    )
    if not versions:
        raise SystemExit(f"{PROG}: no version of {name!r} in the store to serve; see --store")
    with tempfile.TemporaryDirectory(prefix="bench-image-store-") as scratch:
        copy = Path(scratch) / "models"
        shutil.copytree(store / name / str(versions[0]), copy / name / str(versions[0]))
        for path in [copy, *copy.rglob("*")]:
            os.chown(path, APP_UID, APP_UID)
        os.chmod(scratch, 0o755)
        mounts = [f"{copy}:/models"]
        if data_dir.is_dir():
            mounts.append(f"{data_dir}:/data/mnist:ro")
        yield mounts


def machine(load_before: float, load_after: float) -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores; load average {load_before:.1f} before the timings, "
        f"{load_after:.1f} after"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", type=labelled, action="append", default=[], metavar="LABEL=TAG", help="a built image"
    )
    parser.add_argument(
        "--build", type=labelled, action="append", default=[], metavar="LABEL=GITREF",
        help="build the serving image of this commit first",
    )  # fmt: skip
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", "models")))
    parser.add_argument("--name", default=os.environ.get("MNIST_MODEL_NAME", "mnist"))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--runs", type=int, default=5, help="cold starts and imports per image")
    parser.add_argument("--top", type=int, default=15, help="distributions listed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "image.md")
    args = parser.parse_args(argv)
    if not args.image and not args.build:
        parser.error("name an image to measure: --image LABEL=TAG or --build LABEL=GITREF")
    if args.runs < 1 or args.top < 1:
        parser.error("--runs and --top are at least 1")
    return args


def command_line(argv: list[str]) -> str:
    """The command as given, with the store and data folders by their last names only."""
    words = [PROG]
    for word in argv:
        option, sep, value = word.rpartition("=") if word.startswith("--") else ("", "", word)
        words.append(f"{option}{sep}{Path(value).name}" if value.startswith("/") else word)
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if os.geteuid() != 0 or shutil.which("buildah") is None:
        print(f"{PROG}: needs root and buildah, as scripts/build-image.sh does", file=sys.stderr)
        return 2
    images = [(label, tag, f"tag `{tag}`") for label, tag in args.image]
    for label, ref in args.build:
        tag, commit = build(label, ref)
        # scripts/build-image.sh builds with --layers=false: the final stage is one layer.
        images.append((label, tag, f"the serving image of commit {commit}, built by scripts/build-image.sh"))
    measurements = [contents(label, tag, source) for label, tag, source in images]
    load_before = os.getloadavg()[0]
    with volumes(args.store, args.name, args.data_dir) as mounts:
        time_starts(measurements, args.runs, mounts)
    report = render(measurements, args.top, command_line(argv), machine(load_before, os.getloadavg()[0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
