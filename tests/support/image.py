"""The real image: built by scripts/build-image.sh with buildah, run with `buildah run`.

Containers run with chroot isolation on the host's network (no Docker engine, no CNI): a server in
one listens on 127.0.0.1 of this machine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import cmdline, process_tree
from tests.support.paths import REPO_ROOT

__all__ = ["cmdline", "process_tree"]

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-image.sh"
IMAGE_TAG = "mnist-serve:test"
BUILD_TIMEOUT_SECONDS = 40 * 60


BUILD_SPACE_GB = 12


def cannot_build_reason() -> str | None:
    """Why the image cannot be built here, or None."""
    if platform.system() != "Linux":
        return "buildah and debootstrap need Linux"
    if os.geteuid() != 0:
        return "debootstrap and buildah's chroot isolation need root"
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/test.sh installs them with apt-get)"
    # buildah's vfs driver copies the whole tree for every step and commit, under /var/tmp: a build
    # needs about 10 GB (a rehearsal with 6 GB free failed writing a layer: not the project's fault).
    free_gb = shutil.disk_usage("/var/tmp").free / 1e9
    if free_gb < BUILD_SPACE_GB:
        return f"the image build needs about {BUILD_SPACE_GB} GB free under /var/tmp; {free_gb:.1f} GB are"
    return None


def storage_flags() -> list[str]:
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--storage-flags"], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def buildah(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["buildah", *storage_flags(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr[-3000:]}"
    return result


@dataclass
class Image:
    tag: str
    build_seconds: float
    base_was_cached: bool
    config: dict[str, Any]  # the Docker image config: Cmd, Env, User, Healthcheck, ...
    size_bytes: int
    untagged_after_build: list[str]  # image IDs left in the build's storage without a name


def build_image(log_path: Path, tag: str = IMAGE_TAG, options: tuple[str, ...] = ()) -> Image:
    """scripts/build-image.sh TAG OPTIONS... (`buildah bud` options, e.g. --build-arg EXTRAS=)."""
    base_was_cached = buildah("inspect", "--type", "image", "python:3.11-slim", check=False).returncode == 0
    started = time.monotonic()
    with log_path.open("w") as log:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), tag, *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"build failed:\n{log_path.read_text()[-4000:]}"
    inspected = json.loads(buildah("inspect", "--type", "image", tag).stdout)
    config = inspected["Docker"]["config"]
    size = json.loads(buildah("images", "--json", tag).stdout)[0]["size"]  # e.g. "1.94 GB"
    untagged = buildah("images", "--quiet", "--filter", "dangling=true").stdout.split()
    return Image(tag, seconds, base_was_cached, config, decimal_bytes(size), untagged)


def remove_image(image: Image) -> None:
    buildah("rmi", image.tag, check=False)


def decimal_bytes(text: str) -> int:
    number, unit = text.split()
    return round(float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit])


# A `buildah run` beside another in the same container can fail before the command starts, while
# the runtime seals its in-memory copy of itself; the command never ran, so it is run again.
TRANSIENT_RUN_ERROR = "sealing memfd copy: Device or resource busy"
RUN_ATTEMPTS = 3


@dataclass
class Container:
    name: str
    mounts: list[str]

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """`buildah run` of argv in this container, as the image's USER, with its ENV plus `env`."""
        flags = ["--isolation", "chroot", "--network", "host"]
        flags += [f"--volume={mount}" for mount in self.mounts]
        flags += [f"--env={key}={value}" for key, value in (env or {}).items()]
        return ["buildah", *storage_flags(), "run", *flags, self.name, "--", *argv]

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        command = self.command(argv, env)
        for _ in range(RUN_ATTEMPTS - 1):
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
            if result.returncode == 0 or TRANSIENT_RUN_ERROR not in result.stderr:
                return result
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@contextmanager
def container(image: Image, mounts: list[str]) -> Iterator[Container]:
    """A working container of the image (`buildah from`), removed afterwards."""
    name = buildah("from", "--pull=false", image.tag).stdout.strip()
    try:
        yield Container(name, mounts)
    finally:
        buildah("rm", name, check=False)


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")
