"""Render and check the manifests of deploy/kubernetes without a cluster.

`kubectl kustomize` renders an overlay exactly as `kubectl apply -k` would. Core objects are checked
against the Kubernetes OpenAPI schemas that `kubernetes-validate` ships; KServe's objects against the
types of KServe's own Python SDK (its generated models: every field name and type), read from a folder
where `pip install --no-deps --target` put the SDK, since its dependencies clash with this project's.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import types
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO_ROOT

KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release the manifests must work on (autoscaling/v2, policy/v1, seccompProfile).
KUBERNETES_VERSION = "1.30.0"
# Where scripts/test.sh installs the KServe SDK (no dependencies): `kserve` and `kubernetes` packages.
KSERVE_SDK_DIR = Path(os.environ.get("KSERVE_SDK_DIR", "/var/tmp/mnist-serve-kserve-sdk"))
KSERVE_SDK_PACKAGES = ("kserve==0.21.0", "kubernetes==37.0.2")
# Custom resources: checked by their own tests, not by the core schemas.
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "InferenceService": "serving.kserve.io/v1beta1",
    "ServingRuntime": "serving.kserve.io/v1alpha1",
}

Manifest = dict[str, Any]


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(target: Path) -> list[Manifest]:
    """`kubectl kustomize TARGET` as a list of objects."""
    binary = kubectl()
    assert binary, "kubectl is not installed"
    result = subprocess.run([binary, "kustomize", str(target)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"kubectl kustomize {target}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_with_component(
    component: Path, workdir: Path, base: Path = KUBERNETES_DIR / "base"
) -> list[Manifest]:
    """`base` (the API's, by default) with one optional component on top, as an overlay that lists
    it would render it."""
    overlay = workdir / "overlay"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(base, overlay)],
        "components": [os.path.relpath(component, overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(overlay)


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    """The pod a Deployment, Job or CronJob (through its job template) runs."""
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


# --- KServe's types ----------------------------------------------------------------------------------


def kserve_sdk_available() -> bool:
    return (KSERVE_SDK_DIR / "kserve" / "models" / "__init__.py").is_file()


@cache
def _sdk_models() -> tuple[types.ModuleType, types.ModuleType]:
    """kserve.models and kubernetes.client.models, without running the packages' own __init__.

    Those start a model server and a cluster client and need the SDK's dependencies; the generated
    models need only urllib3 and dateutil.
    """
    if str(KSERVE_SDK_DIR) not in sys.path:
        sys.path.append(str(KSERVE_SDK_DIR))
    for package in ("kserve", "kubernetes"):
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = [str(KSERVE_SDK_DIR / package)]
            sys.modules[package] = stub
    return importlib.import_module("kserve.models"), importlib.import_module("kubernetes.client.models")


def _model_class(name: str) -> type:
    for module in _sdk_models():
        if hasattr(module, name):
            return getattr(module, name)  # type: ignore[no-any-return]
    raise AssertionError(f"no type {name} in the KServe or Kubernetes SDK models")


SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
}


def check_against_sdk_type(value: Any, type_name: str, where: str = "") -> list[str]:
    """Problems of `value` as the SDK type `type_name` (e.g. 'V1beta1InferenceService'); [] if none.

    Every mapping key must be a field of its type (the SDK's attribute_map, in JSON spelling) and every
    value of the field's type, recursively: a misspelt or misplaced field is reported with its path.
    """
    if value is None or type_name == "object":
        return []
    if match := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in check_against_sdk_type(v, match[1], f"{where}[{i}]")]
    if match := re.fullmatch(r"[dD]ict[(\[]str, (.+)[)\]]", type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        return [p for k, v in value.items() for p in check_against_sdk_type(v, match[1], f"{where}.{k}")]
    if type_name in SCALARS:
        ok = isinstance(value, SCALARS[type_name]) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{where}: expected {type_name}, got {value!r}"]
    cls = _model_class(type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping, got {value!r}"]
    json_to_attribute = {json_name: attr for attr, json_name in cls.attribute_map.items()}  # type: ignore[attr-defined]
    problems = []
    for key, item in value.items():
        if key not in json_to_attribute:
            problems.append(f"{where}.{key}: no such field in {type_name}")
            continue
        field_type = cls.openapi_types[json_to_attribute[key]]  # type: ignore[attr-defined]
        problems += check_against_sdk_type(item, field_type, f"{where}.{key}")
    return problems


def kserve_type_of(manifest: Manifest) -> str:
    group_version = manifest["apiVersion"].split("/")[-1]
    return f"V1{group_version.removeprefix('v1')}{manifest['kind']}"
