"""Server processes on the local host, for the benchmarks and the tests alike: a free port, the
MNIST_* settings of a server, stopping a process and its group, its descendants, command line and
resident memory (from /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

STOP_TIMEOUT_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(store: Path | str, data_dir: Path, **settings: str) -> dict[str, str]:
    """MNIST_* variables for a server of `store` (a folder, or an `s3://` URL as it is); `settings`
    are further ones by lower-case name (`reload_poll_seconds="0"` is MNIST_RELOAD_POLL_SECONDS)."""
    location = store if isinstance(store, str) else str(store.resolve())
    env = {"MNIST_MODEL_STORE": location, "MNIST_DATA_DIR": str(data_dir.resolve())}
    return env | {f"MNIST_{name.upper()}": value for name, value in settings.items()}


def stop(
    process: subprocess.Popen[bytes],
    timeout: float = STOP_TIMEOUT_SECONDS,
    *,
    group: bool = False,
    targets: Iterable[int] = (),
) -> None:
    """SIGTERM to the process (to its whole group with `group`, or to `targets` instead, say the
    server inside a container's helper), then SIGKILL if it outlives `timeout`. A process that leads
    its own group takes the group with it: whatever outlived it (LitServe's inference worker does)."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            for pid in list(targets) or [process.pid]:
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    leads_group = False
    with contextlib.suppress(ProcessLookupError):
        leads_group = os.getpgid(process.pid) == process.pid
    if group or leads_group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    elif process.poll() is None:
        process.kill()
    process.wait()


def children(pid: int) -> list[int]:
    """The processes `pid`'s main thread started."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(child) for child in path.read_text().split()]
    return []


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, started by any of its threads."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            started = (task / "children").read_text().split()
        except OSError:
            continue
        for child in started:
            found += process_tree(int(child))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """The CPU time `pid` has used so far, user and system, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
