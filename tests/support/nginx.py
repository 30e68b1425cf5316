"""deploy/nginx.conf and the proxy rules it includes, with enough of nginx's grammar for the checks."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

from tests.support.paths import REPO_ROOT

NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"
NGINX_PROXY_CONF = REPO_ROOT / "deploy" / "nginx-proxy.conf"
# Where docker-compose.yml mounts NGINX_PROXY_CONF in the nginx container (nginx.conf includes it).
NGINX_PROXY_CONF_TARGET = "/etc/nginx/mnist-serve-proxy.conf"


def nginx_text(proxy_conf: Path | None = None) -> str:
    """deploy/nginx.conf with its `include` of the proxy rules pointing at `proxy_conf` (a path here)."""
    text = NGINX_CONF.read_text()
    include = f"include {NGINX_PROXY_CONF_TARGET};"
    assert text.count(include) == 1, f"deploy/nginx.conf must {include}"
    return text.replace(include, f"include {proxy_conf or NGINX_PROXY_CONF};")


def nginx_inlined() -> str:
    """deploy/nginx.conf with the proxy rules pasted where it includes them."""
    return nginx_text().replace(f"include {NGINX_PROXY_CONF};", NGINX_PROXY_CONF.read_text())


def nginx_directives(text: str) -> list[tuple[tuple[str, ...], str, list[str]]]:
    """Every simple directive of an nginx config as (enclosing block names, directive, arguments).

    Enough of nginx's grammar for the checks here: comments, quoted strings, blocks, `;`.
    """
    tokens = re.findall(r"\"(?:\\.|[^\"])*\"|'(?:\\.|[^'])*'|[{};]|[^\s{};]+", re.sub(r"#[^\n]*", "", text))
    directives: list[tuple[tuple[str, ...], str, list[str]]] = []
    stack: list[str] = []
    words: list[str] = []
    for token in tokens:
        if token == "{":
            stack.append(" ".join(words))
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            directives.append((tuple(stack), words[0], [w.strip("\"'") for w in words[1:]]))
            words = []
        else:
            words.append(token)
    assert not stack and not words, "unbalanced nginx config"
    return directives


@cache
def nginx() -> list[tuple[tuple[str, ...], str, list[str]]]:
    return nginx_directives(nginx_inlined())


def nginx_upstream_port(upstream: str = "api") -> int:
    """The api port an upstream sends to: `api` (HTTP, MNIST_PORT) or `api_grpc` (MNIST_GRPC_PORT)."""
    block = (f"upstream {upstream}",)
    servers = [args for blocks, name, args in nginx() if name == "server" and blocks[-1:] == block]
    assert len(servers) == 1, servers
    host, _, port = servers[0][0].partition(":")
    assert host == "api", "the compose service name, resolved by Docker's DNS"
    return int(port)


def nginx_listen_ports() -> list[int]:
    """The ports nginx listens on, in file order: HTTP, then gRPC."""
    return [int(args[0]) for _, name, args in nginx() if name == "listen"]


def nginx_listen_port() -> int:
    """The HTTP port (the first server block, which holds the proxy rules)."""
    return nginx_listen_ports()[0]


def nginx_grpc_listen_port() -> int:
    _http, grpc = nginx_listen_ports()
    return grpc


def for_nginx_version(text: str, version: tuple[int, ...]) -> str:
    """The config for an older nginx, as Debian ships: `http2 on` (1.25.1) becomes the listen
    parameter, and upstream `resolve` (1.27.3) goes."""
    if version < (1, 25, 1):
        text = re.sub(r"listen ([^;]+);(\s*)http2 on;", r"listen \1 http2;", text)
    if version < (1, 27, 3):
        text = text.replace(" resolve ", " ")
    return text


def installed_nginx_version(binary: str) -> tuple[int, ...]:
    version_text = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version_text)
    assert match, version_text
    return tuple(int(part) for part in match.groups())


def nginx_exact_locations() -> set[str]:
    return {block[-1].split()[-1] for block, _, _ in nginx() if block and block[-1].startswith("location = ")}
