"""Create the virtual environment the peer servers (BentoML, LitServe) run in.

    python -m bench.peers.setup [--venv .venv-bench-peers]

BentoML 1.4 pins OpenTelemetry a patch below the service's, so `pip install .[bench]` beside the
service would change the service's own packages. The peers get a venv of their own instead, with
the `bench` extra's packages and the same TensorFlow, Keras, NumPy and Pillow as this interpreter,
so every server runs the same model file on the same numerics.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tomllib
import venv
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".venv-bench-peers"
# What the peers import besides the frameworks, pinned to this interpreter's versions.
SAME_AS_SERVICE = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow")


def peer_python(venv_dir: Path = DEFAULT_VENV) -> Path:
    return venv_dir / "bin" / "python"


@dataclass(frozen=True)
class PeerInterpreter:
    python: str | None  # None: the peer cannot run, for `problem`
    version: str = ""
    problem: str = ""


def find_interpreter(module: str, venv_dir: Path = DEFAULT_VENV) -> PeerInterpreter:
    """A Python that imports `module`: this one (a venv with `.[train,bench]`), else the peers' venv."""
    if importlib.util.find_spec(module) is not None:
        return PeerInterpreter(sys.executable, metadata.version(module))
    python = peer_python(venv_dir)
    if not python.exists():
        return PeerInterpreter(None, problem=f"{module} is not installed (`python -m bench.peers.setup`)")
    probe = f"import {module}, importlib.metadata as m; print(m.version({module!r}))"
    check = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if check.returncode:
        last = (check.stderr.strip().splitlines() or ["no output"])[-1]
        return PeerInterpreter(None, problem=f"{python} cannot import {module}: {last}")
    return PeerInterpreter(str(python), check.stdout.strip())


def bench_extra() -> list[str]:
    """The `bench` extra of pyproject.toml: one list of the peers' packages, here and for pip."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["bench"])


def pinned_service_packages() -> list[str]:
    pins = []
    for name in SAME_AS_SERVICE:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue  # tensorflow-cpu and tensorflow: whichever of the two is installed
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(argv)
    python = peer_python(args.venv)
    if not python.exists():
        venv.create(args.venv, with_pip=True)
    requirements = [*bench_extra(), *pinned_service_packages()]
    print(f"installing into {args.venv}: {' '.join(requirements)}", flush=True)
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements])
    if result.returncode:
        print(f"bench.peers.setup: error: pip failed with status {result.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
