"""deploy/nginx.conf and the proxy rules it includes, with enough of nginx's grammar for the checks."""

from __future__ import annotations

import re
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


def nginx_upstream_port() -> int:
    servers = [args for block, name, args in nginx() if name == "server" and block[-1:] == ("upstream api",)]
    assert len(servers) == 1, servers
    host, _, port = servers[0][0].partition(":")
    assert host == "api", "the compose service name, resolved by Docker's DNS"
    return int(port)


def nginx_listen_port() -> int:
    [listen] = [args for block, name, args in nginx() if name == "listen"]
    return int(listen[0])


def nginx_exact_locations() -> set[str]:
    return {block[-1].split()[-1] for block, _, _ in nginx() if block and block[-1].startswith("location = ")}
