"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary folder,
on a free port of 127.0.0.1; stopped and started again by the fault tests."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.live_server import free_port
from tests.support.waiting import wait_until

USER = "postgres"  # PostgreSQL refuses to run as root
DATABASE = "mnist"
START_TIMEOUT_SECONDS = 60


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (apt-get install postgresql), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", USER, "--", *command]


@dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={DATABASE} connect_timeout=2"

    def _ctl(self, *args: str) -> None:
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        result = subprocess.run(
            _as_postgres(command), capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {(result.stdout + result.stderr).strip()[-2000:]}")

    def start(self) -> None:
        log = self.data_dir.parent / "postgres.log"
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir.parent} -c fsync=off"
        self._ctl("start", "-w", "-l", str(log), "-o", options)
        wait_until(self.accepts, timeout=START_TIMEOUT_SECONDS, interval=0.1)

    def stop(self) -> None:
        """Stop at once (open connections are cut), as a crash or a failover would."""
        self._ctl("stop", "-w", "-m", "immediate")

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.conninfo.replace(f"dbname={DATABASE}", "dbname=postgres")):
                return True
        except psycopg.OperationalError:
            return False

    def reset(self) -> None:
        """An empty database again, for a test that starts from nothing."""
        admin = self.conninfo.replace(f"dbname={DATABASE}", "dbname=postgres")
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {DATABASE}")


def start_postgres() -> PostgresServer:
    """initdb into a folder of its own, start on a free port, create the test database. Not under
    pytest's temporary folder: pytest keeps that at mode 0700, which the postgres user cannot
    enter."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (scripts/test.sh does)")
    root = Path(tempfile.mkdtemp(prefix="mnist-serve-postgres-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(USER)
        shutil.chown(root, owner.pw_uid, owner.pw_gid)
    data_dir = root / "data"
    initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", USER, "--auth=trust", "-E", "UTF8"]
    result = subprocess.run(_as_postgres(initdb), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stderr.strip()[-2000:]}")
    server = PostgresServer(bin_dir, data_dir, free_port())
    server.start()
    server.reset()
    return server


def remove_postgres(server: PostgresServer) -> None:
    """Stop the server if it runs, and delete its folder."""
    if server.accepts():
        server.stop()
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)
