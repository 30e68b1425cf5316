"""deploy/kubernetes renders for every overlay, validates, and agrees with the project.

Rendering needs the `kubectl` client (no cluster); scripts/test.sh makes sure there is one. Each check
that needs a tool says so in its skip reason where the tool is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from tests.support.compose import COMPOSE_FILE, load_compose, service_environment
from tests.support.dockerfile import duration_seconds, parse_dockerfile, parse_healthcheck
from tests.support.kubernetes import (
    CUSTOM_KINDS,
    KSERVE_SDK_DIR,
    KSERVE_SDK_PACKAGES,
    KUBERNETES_DIR,
    KUBERNETES_VERSION,
    Manifest,
    check_against_sdk_type,
    container_env,
    find,
    kserve_sdk_available,
    kserve_type_of,
    kubectl,
    pod_spec,
    render,
    render_with_component,
)
from tests.support.project import app_routes, settings_variables

OVERLAYS = sorted(p.name for p in (KUBERNETES_DIR / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (KUBERNETES_DIR / "components").iterdir() if p.is_dir())
STANDALONE = ("training", "kserve")

pytestmark = pytest.mark.skipif(kubectl() is None, reason="no kubectl here (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """Every kustomization a user applies, rendered: overlays, base + each component, training, kserve."""
    out = {f"overlays/{name}": render(KUBERNETES_DIR / "overlays" / name) for name in OVERLAYS}
    for name in COMPONENTS:
        workdir = tmp_path_factory.mktemp(name)
        out[f"components/{name}"] = render_with_component(KUBERNETES_DIR / "components" / name, workdir)
    for name in STANDALONE:
        out[name] = render(KUBERNETES_DIR / name)
    training = KUBERNETES_DIR / "training"
    workdir = tmp_path_factory.mktemp("training-object-storage")
    out["training/object-storage"] = render_with_component(training / "object-storage", workdir, training)
    return out


@pytest.fixture(scope="module")
def production(rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    return rendered["overlays/production"]


def api_objects(rendered: dict[str, list[Manifest]]) -> list[tuple[str, list[Manifest]]]:
    """The kustomizations that deploy the API: the overlays and base + each component."""
    return [(name, found) for name, found in rendered.items() if name.startswith(("overlays", "components"))]


def settings_of(manifests: list[Manifest]) -> dict[str, str]:
    configmap = find(manifests, "ConfigMap")
    assert configmap["metadata"]["name"].startswith("mnist-serve-settings-"), "hash suffix: changes roll pods"
    return configmap["data"]  # type: ignore[no-any-return]


def api_container(manifests: list[Manifest]) -> dict[str, Any]:
    [container] = pod_spec(find(manifests, "Deployment", "mnist-serve"))["containers"]
    return container  # type: ignore[no-any-return]


def test_the_overlays_are_dev_and_production() -> None:
    assert OVERLAYS == ["dev", "production"]


def test_every_kustomization_renders(rendered: dict[str, list[Manifest]]) -> None:
    for name, manifests in rendered.items():
        assert manifests, f"{name} renders nothing"
    for name in OVERLAYS:
        kinds = {m["kind"] for m in rendered[f"overlays/{name}"]}
        expected = {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
        expected |= {"PodDisruptionBudget", "NetworkPolicy", "PersistentVolumeClaim"}
        assert expected <= kinds, f"{name} lacks {expected - kinds}"
        namespace = find(rendered[f"overlays/{name}"], "Namespace")["metadata"]["name"]
        for manifest in rendered[f"overlays/{name}"]:
            if manifest["kind"] != "Namespace":
                assert manifest["metadata"]["namespace"] == namespace, manifest["metadata"]
    assert "ServiceMonitor" in {m["kind"] for m in rendered["overlays/production"]}


def test_core_objects_match_the_kubernetes_schemas(rendered: dict[str, list[Manifest]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    checked = 0
    for name, manifests in rendered.items():
        for manifest in manifests:
            if manifest["kind"] in CUSTOM_KINDS:
                assert manifest["apiVersion"] == CUSTOM_KINDS[manifest["kind"]]
                continue
            try:
                kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {manifest['kind']} {manifest['metadata']['name']}: {exc.message}")
            checked += 1
    assert checked >= 20
    # The check can fail: strict validation refuses a field Kubernetes does not know.
    deployment = find(rendered["overlays/production"], "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kserve_objects_match_the_kserve_sdk_types(rendered: dict[str, list[Manifest]]) -> None:
    if not kserve_sdk_available():
        pytest.skip(f"no KServe SDK in {KSERVE_SDK_DIR} (scripts/test.sh installs {KSERVE_SDK_PACKAGES})")
    import yaml

    canary = yaml.safe_load((KUBERNETES_DIR / "kserve" / "canary.yaml").read_text())
    objects = [*rendered["kserve"], canary]
    for manifest in objects:
        problems = check_against_sdk_type(manifest, kserve_type_of(manifest), manifest["kind"])
        assert not problems, problems
    # The check can fail: a misspelt field is caught.
    broken = {**canary, "spec": {"predictor": {"minReplica": 1}}}
    assert check_against_sdk_type(broken, kserve_type_of(broken), "x") == [
        "x.spec.predictor.minReplica: no such field in V1beta1PredictorSpec"
    ]


def test_kserve_predictor_is_this_image_on_protocol_v2(rendered: dict[str, list[Manifest]]) -> None:
    runtime = find(rendered["kserve"], "ServingRuntime")
    service = find(rendered["kserve"], "InferenceService")
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2" and "v2" in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["storageUri"].startswith(("s3://", "gs://", "pvc://", "https://"))
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    [container] = runtime["spec"]["containers"]
    env = {k: v["value"] for k, v in container_env(container).items()}
    assert set(env) <= settings_variables()
    assert env["MNIST_MODEL_STORE"] == "/mnt/models", "where KServe's storage initializer puts storageUri"
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    # KServe takes the first port as HTTP and the one named h2c as the v2 gRPC endpoint.
    assert container["ports"][0]["containerPort"] == int(env["MNIST_PORT"])
    assert ports["h2c"] == int(env["MNIST_GRPC_PORT"])
    assert container["readinessProbe"]["httpGet"]["path"] in app_routes()
    assert container["image"].rsplit("/", 1)[-1].split(":")[0] == compose_image_name()
    import yaml

    canary = yaml.safe_load((KUBERNETES_DIR / "kserve" / "canary.yaml").read_text())
    assert canary["metadata"]["name"] == service["metadata"]["name"]
    assert 0 < canary["spec"]["predictor"]["canaryTrafficPercent"] < 100
    assert canary["spec"]["predictor"]["model"]["storageUri"] != model["storageUri"]


def compose_image_name() -> str:
    image = load_compose()["services"]["api"]["image"]
    return str(image).rsplit("/", 1)[-1].split(":")[0]


def test_image_name_matches_compose(rendered: dict[str, list[Manifest]]) -> None:
    workloads = [(name, find(manifests, "Deployment")) for name, manifests in api_objects(rendered)]
    workloads += [("training", find(rendered["training"], kind)) for kind in ("Job", "CronJob")]
    for name, workload in workloads:
        for container in pod_spec(workload)["containers"]:
            repository = container["image"].rsplit("/", 1)[-1].split(":")[0]
            assert repository == compose_image_name(), f"{name}: {container['image']}"
            assert ":" in container["image"].rsplit("/", 1)[-1], f"{name}: image without a tag"


def test_every_setting_is_configurable_in_compose_and_kubernetes(production: list[Manifest]) -> None:
    """Compose, the ConfigMap + Deployment env, and Settings name the same MNIST_* variables."""
    fields = settings_variables()
    api = service_environment(load_compose()["services"]["api"])
    compose = {k for k in api if k.startswith("MNIST_")}
    missing, unknown = sorted(fields - compose), sorted(compose - fields)
    assert compose == fields, f"{COMPOSE_FILE.name} api: missing {missing}, unknown {unknown}"
    kubernetes = set(settings_of(production)) | set(container_env(api_container(production)))
    missing, unknown = sorted(fields - kubernetes), sorted(kubernetes - fields)
    assert kubernetes == fields, f"ConfigMap + Deployment: missing {missing}, unknown {unknown}"


def test_configmap_settings_validate(
    rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.project import settings_from

    for name, manifests in api_objects(rendered):
        data = settings_of(manifests)
        assert set(data) <= settings_variables(), name
        settings = settings_from(dict(data), monkeypatch)
        assert settings.host == "0.0.0.0" and settings.workers == 1, "one worker a pod; pods scale"
        ports = {p["name"]: p["containerPort"] for p in api_container(manifests)["ports"]}
        assert ports == {"http": settings.port, "grpc": settings.grpc_port}, name


def test_probes_use_real_routes_and_cover_startup(rendered: dict[str, list[Manifest]]) -> None:
    routes = app_routes()
    [healthcheck] = [i for i in parse_dockerfile()[-1].instructions if i.name == "HEALTHCHECK"]
    start_period = duration_seconds(parse_healthcheck(healthcheck.value).options["start-period"])
    for name, manifests in api_objects(rendered):
        container = api_container(manifests)
        port_names = {p["name"] for p in container["ports"]}
        probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        for kind, probe in probes.items():
            assert probe["httpGet"]["path"] in routes and "GET" in routes[probe["httpGet"]["path"]], kind
            assert probe["httpGet"]["port"] in port_names, kind
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        startup = probes["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= start_period, name


def test_pods_are_locked_down(rendered: dict[str, list[Manifest]]) -> None:
    [user] = [i.value for i in parse_dockerfile()[-1].instructions if i.name == "USER"]
    uid = int(user.split(":")[0])
    workloads = [(n, find(m, "Deployment")) for n, m in api_objects(rendered)]
    workloads += [("training", find(rendered["training"], kind)) for kind in ("Job", "CronJob")]
    for name, workload in workloads:
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] and pod["runAsUser"] == uid, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        mounts_by_volume = {v["name"]: v for v in spec["volumes"]}
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], f"{name}: {container['name']}"
            assert "cpu" in container["resources"]["requests"], f"{name}: {container['name']}"
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in mounts_by_volume[tmp[0]["name"]], f"{name}: writable /tmp"


def test_rollouts_and_shutdown_lose_no_request(rendered: dict[str, list[Manifest]]) -> None:
    for name, manifests in api_objects(rendered):
        deployment = find(manifests, "Deployment")
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        spec = pod_spec(deployment)
        pre_stop = api_container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        drain = float(settings_of(manifests)["MNIST_GRACEFUL_SHUTDOWN_SECONDS"])
        assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain, name


def test_selectors_and_ports_agree(rendered: dict[str, list[Manifest]]) -> None:
    for name, manifests in api_objects(rendered):
        deployment = find(manifests, "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        container = api_container(manifests)
        port_names = {p["name"] for p in container["ports"]}
        service = find(manifests, "Service")
        assert service["spec"]["selector"].items() <= labels.items(), name
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
        for kind in ("PodDisruptionBudget", "NetworkPolicy"):
            spec = find(manifests, kind)["spec"]
            selector = spec.get("selector") or spec["podSelector"]
            assert selector["matchLabels"].items() <= labels.items(), f"{name}: {kind}"
        policy = find(manifests, "NetworkPolicy")
        assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} <= port_names
        hpa = find(manifests, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert deployment["spec"]["replicas"] >= hpa["spec"]["minReplicas"], name
        for monitor in (m for m in manifests if m["kind"] == "ServiceMonitor"):
            assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
                assert endpoint["path"] in app_routes()


def test_custom_metric_variant_scales_on_an_exported_metric(rendered: dict[str, list[Manifest]]) -> None:
    from app.operations.metrics import Metrics

    exported = {metric.name for metric in Metrics().registry.collect()}
    hpa = find(rendered["components/custom-metrics-hpa"], "HorizontalPodAutoscaler")
    [pods] = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    # prometheus-adapter's rule (docs/deployment.md) turns the histogram into an `_avg` metric.
    assert pods["metric"]["name"].removesuffix("_avg") in exported
    doc = (KUBERNETES_DIR.parents[1] / "docs" / "deployment.md").read_text()
    assert pods["metric"]["name"] in doc, "the adapter rule is documented"


def test_model_store_is_shared_by_training_and_every_replica(rendered: dict[str, list[Manifest]]) -> None:
    production = rendered["overlays/production"]
    claim = find(production, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    settings = settings_of(production)

    def store_mount(spec: dict[str, Any], container: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == settings["MNIST_MODEL_STORE"]]
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        return mount, volume

    deployment_spec = pod_spec(find(production, "Deployment"))
    mount, volume = store_mount(deployment_spec, api_container(production))
    assert mount["readOnly"] and volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    job = find(rendered["training"], "Job")
    [train] = pod_spec(job)["containers"]
    train_env = {k: v["value"] for k, v in container_env(train).items()}
    assert set(train_env) <= settings_variables()
    assert train_env["MNIST_MODEL_STORE"] == settings["MNIST_MODEL_STORE"]
    assert train_env["MNIST_MODEL_NAME"] == settings["MNIST_MODEL_NAME"]
    mount, volume = store_mount(pod_spec(job), train)
    assert not mount.get("readOnly"), "the job publishes into the store"
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert train["command"][0] == "mnist-train"
    assert float(settings["MNIST_RELOAD_POLL_SECONDS"]) > 0, "replicas follow the store"


def test_object_storage_variant_reads_the_bucket_and_follows_it(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["components/object-storage"]
    assert not [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    spec = pod_spec(find(manifests, "Deployment"))
    assert "initContainers" not in spec, "the service reads the bucket itself: nothing to copy first"
    settings = settings_of(manifests)
    # The same layout the InferenceService's storageUri names.
    isvc = find(rendered["kserve"], "InferenceService")
    assert settings["MNIST_MODEL_STORE"] == isvc["spec"]["predictor"]["model"]["storageUri"]
    assert float(settings["MNIST_RELOAD_POLL_SECONDS"]) > 0, "pods pick up new versions without a restart"
    container = api_container(manifests)
    secrets = [source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source]
    assert secrets == ["mnist-object-storage"], "the AWS credentials and endpoint"
    [cache] = [m for m in container["volumeMounts"] if m["mountPath"] == settings["MNIST_MODEL_CACHE_DIR"]]
    assert not cache.get("readOnly"), "versions are downloaded there"
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[cache["name"]]


def test_docs_show_the_kubernetes_commands() -> None:
    readme = (KUBERNETES_DIR.parents[1] / "README.md").read_text()
    doc = (KUBERNETES_DIR.parents[1] / "docs" / "deployment.md").read_text()
    apply = "kubectl apply -k deploy/kubernetes/overlays/production"
    for needle in (apply, "InferenceService", "tritonclient"):
        assert needle in readme and needle in doc, needle
    assert Path(KUBERNETES_DIR / "kserve" / "canary.yaml").name in doc
    assert Settings.model_fields["reload_poll_seconds"].default > 0


def test_the_prediction_log_database_comes_from_a_secret(rendered: dict[str, list[Manifest]]) -> None:
    """Its URL holds a password: a Secret's key, never the ConfigMap; every API deployment has it."""
    for name, manifests in api_objects(rendered):
        assert "MNIST_DATABASE_URL" not in settings_of(manifests), name
        source = container_env(api_container(manifests))["MNIST_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert source == {"name": "mnist-serve-database", "key": "url"}, name
        assert settings_of(manifests)["MNIST_PREDICTION_LOG"] == "true", name


def test_retraining_runs_hourly_into_the_served_store_from_the_services_database(
    rendered: dict[str, list[Manifest]],
) -> None:
    """The CronJob checks the API's prediction log and publishes into the claim the replicas read."""
    from model_store.settings import StoreSettings
    from training.arguments import SERVING, build_parser

    production = rendered["overlays/production"]
    settings = settings_of(production)
    cronjob = find(rendered["training"], "CronJob")
    assert len(cronjob["spec"]["schedule"].split()) == 5
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", "one fine-tune at a time"
    spec = pod_spec(cronjob)
    [retrain] = spec["containers"]
    env = container_env(retrain)
    assert set(env) <= settings_variables()
    assert env["MNIST_MODEL_STORE"]["value"] == settings["MNIST_MODEL_STORE"]
    assert env["MNIST_MODEL_NAME"]["value"] == settings["MNIST_MODEL_NAME"]
    api_database = container_env(api_container(production))["MNIST_DATABASE_URL"]
    assert env["MNIST_DATABASE_URL"] == api_database, "the same Secret as the API's"
    [mount] = [m for m in retrain["volumeMounts"] if m["mountPath"] == settings["MNIST_MODEL_STORE"]]
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert not mount.get("readOnly"), "it publishes into the store"
    claim = find(production, "PersistentVolumeClaim")["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert retrain["command"][0] == "mnist-train"
    args = build_parser(StoreSettings()).parse_args(retrain["command"][1:])
    assert args.feedback and args.min_new_corrections >= 1 and args.fine_tune_from == SERVING


def test_training_publishes_into_the_bucket_the_object_storage_variant_serves(
    rendered: dict[str, list[Manifest]],
) -> None:
    """With training's object-storage component, the Job and the CronJob write the bucket the API's
    object-storage component reads, with its credentials, and mount no claim."""
    api = rendered["components/object-storage"]
    bucket = settings_of(api)["MNIST_MODEL_STORE"]
    api_secrets = [
        source["secretRef"]["name"] for source in api_container(api)["envFrom"] if "secretRef" in source
    ]
    for kind in ("Job", "CronJob"):
        spec = pod_spec(find(rendered["training/object-storage"], kind))
        [container] = spec["containers"]
        assert container_env(container)["MNIST_MODEL_STORE"]["value"] == bucket, kind
        assert [source["secretRef"]["name"] for source in container["envFrom"]] == api_secrets, kind
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert not [v for v in volumes.values() if "persistentVolumeClaim" in v], kind
        assert {mount["name"] for mount in container["volumeMounts"]} <= set(volumes), kind
