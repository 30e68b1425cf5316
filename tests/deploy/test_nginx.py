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
from tests.support.nginx import nginx, nginx_text, nginx_upstream_port


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
    [[size]] = [args for _, name, args in nginx() if name == "client_max_body_size"]
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    limit = int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
    assert limit > Settings.model_fields["max_upload_bytes"].default


TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def test_nginx_config_syntax(tmp_path: Path) -> None:
    """`nginx -t` on the file when an nginx binary is installed (Debian's is too old for `resolve`)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("no nginx binary here")
    version_text = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr
    version = tuple(int(p) for p in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version_text).groups())  # type: ignore[union-attr]
    text = nginx_text()
    text = re.sub(r"^user .*$", "", text, flags=re.M)  # the nginx user exists only in the image
    text = text.replace("/var/run/nginx.pid", str(tmp_path / "nginx.pid"))
    text = text.replace("server api:", "server 127.0.0.1:")  # no Docker DNS here
    if version < (1, 27, 3):
        text = text.replace(" resolve ", " ")
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
