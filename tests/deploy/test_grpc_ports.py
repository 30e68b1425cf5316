"""The gRPC port (MNIST_GRPC_PORT, default 8081) is carried by every deployment file."""

from pathlib import Path

import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
GRPC_PORT = Settings.model_fields["grpc_port"].default


def test_dockerfile_exposes_the_grpc_port() -> None:
    text = (ROOT / "Dockerfile").read_text()
    expose = [line for line in text.splitlines() if line.startswith("EXPOSE")]
    assert expose and str(GRPC_PORT) in expose[0].split()
    assert f"MNIST_GRPC_PORT={GRPC_PORT}" in text


def test_compose_api_exposes_the_grpc_port() -> None:
    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    assert str(GRPC_PORT) in [str(port) for port in api["expose"]]
    assert api["environment"]["MNIST_GRPC_PORT"] == str(GRPC_PORT)


def test_kubernetes_service_names_an_h2c_grpc_port() -> None:
    service = yaml.safe_load((ROOT / "deploy/kubernetes/base/service.yaml").read_text())
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/base/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    named = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert named["grpc"] == GRPC_PORT


def test_kserve_runtime_offers_an_h2c_port() -> None:
    runtime = yaml.safe_load((ROOT / "deploy/kubernetes/kserve/servingruntime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    h2c = [port for port in container["ports"] if port.get("name") == "h2c"]
    assert h2c and h2c[0]["containerPort"] == GRPC_PORT
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["MNIST_GRPC_PORT"] == str(GRPC_PORT)
