"""docs/tls.md holds: a real nginx running the shipped deploy/nginx-tls.conf, with a self-signed
certificate made here by openssl, in front of a real service, answers HTTPS (httpx trusting only that
certificate) and gRPC over TLS (grpc's ssl_channel_credentials with it)."""

from __future__ import annotations

import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from app.grpc.open_inference.messages import method_path
from mnist_client.grpc_transport import infer_request, predictions, serializers
from model_store.mnist_data import load_split
from tests.app.conftest import encode
from tests.support.live_server import RunningServer, free_port, service_env, uvicorn_server
from tests.support.nginx import for_nginx_version, installed_nginx_version
from tests.support.paths import REPO_ROOT
from tests.support.waiting import wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TLS_CONF = REPO_ROOT / "deploy" / "nginx-tls.conf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(NGINX).exists(), reason="no nginx (apt-get install nginx-light)"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl"),
]


@dataclass
class Certificate:
    crt: Path
    key: Path


@dataclass
class TlsProxy:
    https_url: str
    grpc_address: str
    certificate: Certificate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "mnist-serve.crt", folder / "mnist-serve.key"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)),
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(crt, key)


@pytest.fixture(scope="module")
def service(
    seed_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, int]]:
    """The quick `seed` store: what is tested is the path through nginx, not the model."""
    grpc_port = free_port()
    env = service_env(seed_store, mnist_dir, grpc_port=str(grpc_port))
    with uvicorn_server(env, tmp_path_factory.mktemp("tls-service") / "server.log") as server:
        yield server, grpc_port


def render(folder: Path, certificate: Certificate, ports: dict[str, int], upstreams: dict[str, int]) -> Path:
    """The shipped config with this test's ports, certificate and folders; nothing else changed."""
    text = TLS_CONF.read_text()
    replacements = {
        "listen 443 ssl;": f"listen 127.0.0.1:{ports['https']} ssl;",
        "listen 8443 ssl;": f"listen 127.0.0.1:{ports['grpc']} ssl;",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstreams['http']};",
        "server 127.0.0.1:8081;": f"server 127.0.0.1:{upstreams['grpc']};",
        "/etc/nginx/tls/mnist-serve.crt": str(certificate.crt),
        "/etc/nginx/tls/mnist-serve.key": str(certificate.key),
        "/var/log/nginx/": f"{folder}/",
        "/run/nginx.pid": str(folder / "nginx.pid"),
    }
    for shipped, local in replacements.items():
        assert shipped in text, f"deploy/nginx-tls.conf no longer says {shipped!r}"
        text = text.replace(shipped, local)
    temp_paths = "".join(f"{kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi"))
    text = text.replace("http {", "http {" + temp_paths + "uwsgi_temp_path /tmp; scgi_temp_path /tmp;", 1)
    conf = folder / "nginx.conf"
    conf.write_text(for_nginx_version(text, installed_nginx_version(NGINX)))
    return conf


@pytest.fixture(scope="module")
def proxy(
    service: tuple[RunningServer, int], certificate: Certificate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsProxy]:
    server, grpc_port = service
    folder = tmp_path_factory.mktemp("nginx-tls")
    ports = {"https": free_port(), "grpc": free_port()}
    upstreams = {"http": int(server.url.rsplit(":", 1)[1]), "grpc": grpc_port}
    conf = render(folder, certificate, ports, upstreams)
    command = [
        NGINX,
        "-p",
        str(folder),
        "-c",
        str(conf),
        "-e",
        str(folder / "error.log"),
        "-g",
        "daemon off;",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    https_url = f"https://localhost:{ports['https']}"
    context = ssl.create_default_context(cafile=str(certificate.crt))

    def answers() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            return httpx.get(f"{https_url}/healthz", verify=context, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=30)
        yield TlsProxy(https_url, f"localhost:{ports['grpc']}", certificate)
    finally:
        process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def direct_digits(service: tuple[RunningServer, int], images: np.ndarray) -> list[int]:
    """What the service answers without nginx, over plain HTTP."""
    server, _ = service
    answers = [
        httpx.post(f"{server.url}/predict", files={"file": ("d.png", encode(image), "image/png")})
        for image in images
    ]
    return [answer.json()["prediction"] for answer in answers]


def test_https_through_the_shipped_config_answers_predictions(
    proxy: TlsProxy, service: tuple[RunningServer, int], mnist_dir: Path
) -> None:
    images = load_split(mnist_dir, "test").images[:4]
    context = ssl.create_default_context(cafile=str(proxy.certificate.crt))
    with httpx.Client(base_url=proxy.https_url, verify=context) as client:
        sample = client.get("/test/128")
        assert sample.status_code == 200, sample.text
        assert sample.json()["label"] == 8
        answers = [
            client.post("/predict", files={"file": ("d.png", encode(image), "image/png")}) for image in images
        ]
    assert all(answer.status_code == 200 for answer in answers)
    assert [answer.json()["prediction"] for answer in answers] == direct_digits(service, images)


def test_https_is_refused_without_the_certificate_and_plain_http_gets_no_answer(proxy: TlsProxy) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{proxy.https_url}/healthz")  # the system's CAs do not know a self-signed one
    plain = httpx.get(proxy.https_url.replace("https://", "http://") + "/healthz")
    assert plain.status_code == 400 and "HTTPS" in plain.text


def test_grpc_over_tls_through_the_shipped_config_answers(
    proxy: TlsProxy, service: tuple[RunningServer, int], mnist_dir: Path
) -> None:
    images = load_split(mnist_dir, "test").images[:4]
    credentials = grpc.ssl_channel_credentials(root_certificates=proxy.certificate.crt.read_bytes())
    with grpc.secure_channel(proxy.grpc_address, credentials) as channel:
        infer = channel.unary_unary(method_path("ModelInfer"), **serializers())
        request = infer_request(images, None)
        request.model_name = "mnist"
        response = infer(request, timeout=30)
    answers = predictions(response, [None] * len(images))
    assert [answer.digit for answer in answers] == direct_digits(service, images)


def test_the_page_shows_the_shipped_config() -> None:
    page = (REPO_ROOT / "docs" / "tls.md").read_text()
    assert '--8<-- "deploy/nginx-tls.conf"' in page
    assert re.search(r"grpcs://", page)
