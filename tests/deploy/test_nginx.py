"""deploy/nginx.conf and its proxy rules against the service: upstream, retries, request ids, body
limit, and `nginx -t` when an nginx binary is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.config import Settings
from tests.support.compose import load_compose
from tests.support.nginx import (
    for_nginx_version,
    installed_nginx_version,
    nginx,
    nginx_text,
    nginx_upstream_port,
)


def test_nginx_resolves_api_through_docker_dns() -> None:
    directives = nginx()
    [resolver] = [args for block, name, args in directives if name == "resolver"]
    assert resolver[0] == "127.0.0.11" and any(a.startswith("valid=") for a in resolver)
    [server] = [
        args for block, name, args in directives if name == "server" and block[-1:] == ("upstream api",)
    ]
    assert "resolve" in server, "without `resolve` nginx looks `api` up once and never sees new replicas"
    assert any(name == "zone" for block, name, _ in directives if block[-1:] == ("upstream api",))
    assert nginx_upstream_port() == Settings.model_fields["port"].default


def test_nginx_proxies_everything_to_the_upstream() -> None:
    proxied = [(block[-1], args) for block, name, args in nginx() if name == "proxy_pass"]
    assert proxied == [("location /admin/", ["http://api"]), ("location /", ["http://api"])]


def test_nginx_balances_grpc_calls_over_the_replicas_grpc_port() -> None:
    """gRPC goes through an upstream of its own, per call, to MNIST_GRPC_PORT of the api service."""
    directives = nginx()
    grpc_passes = [args for _, name, args in directives if name == "grpc_pass"]
    assert grpc_passes == [["grpc://api_grpc"]]
    assert nginx_upstream_port("api_grpc") == Settings.model_fields["grpc_port"].default
    api_environment = load_compose()["services"]["api"]["environment"]
    assert int(api_environment["MNIST_GRPC_PORT"]) == nginx_upstream_port("api_grpc")
    [server] = [
        args for block, name, args in directives if block[-1:] == ("upstream api_grpc",) and name == "server"
    ]
    assert "resolve" in server, "replicas added by --scale join the gRPC pool too"
    assert ["on"] in [args for _, name, args in directives if name == "http2"], "gRPC needs HTTP/2 (h2c)"
    [retries] = [args for _, name, args in directives if name == "grpc_next_upstream"]
    assert "non_idempotent" in retries, "an inference call is retried on another replica"


def test_nginx_retries_predictions_but_not_admin_calls() -> None:
    retries = {block[-1]: args for block, name, args in nginx() if name == "proxy_next_upstream"}
    assert "non_idempotent" in retries["location /"], "a POST /predict is retried on another replica"
    assert "non_idempotent" not in retries["location /admin/"], "POST /admin/reload acts on one replica"


def test_nginx_keeps_a_safe_client_request_id() -> None:
    [header] = [args for _, name, args in nginx() if name == "proxy_set_header" and args[0] == "X-Request-ID"]
    assert header == ["X-Request-ID", "$mnist_request_id"]
    from app.operations.request_observer import _SAFE_REQUEST_ID

    [condition] = [block[-1] for block, _, _ in nginx() if block and block[-1].startswith("if (")]
    assert f"^{_SAFE_REQUEST_ID.pattern}$" in condition, "nginx keeps the ids the service keeps"


def test_nginx_body_limit_leaves_room_for_the_service_limit() -> None:
    """On HTTP and gRPC alike the service enforces its own limit and answers why."""
    sizes = [args[0] for _, name, args in nginx() if name == "client_max_body_size"]
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    assert len(sizes) == 2, sizes
    for size in sizes:
        limit = int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
        assert limit > Settings.model_fields["max_upload_bytes"].default


TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def test_nginx_config_syntax(tmp_path: Path) -> None:
    """`nginx -t` on the file when an nginx binary is installed (Debian's is too old for `resolve`)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("no nginx binary here")
    text = for_nginx_version(nginx_text(), installed_nginx_version(binary))
    text = re.sub(r"^user .*$", "", text, flags=re.M)  # the nginx user exists only in the image
    text = text.replace("/var/run/nginx.pid", str(tmp_path / "nginx.pid"))
    text = text.replace("server api:", "server 127.0.0.1:")  # no Docker DNS here
    temp_paths = "".join(f"{kind}_temp_path {tmp_path / kind};" for kind in TEMP_PATHS)
    text = text.replace("http {", "http {" + temp_paths, 1)  # a distribution's paths may not exist here
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
