"""deploy/k8s/: both overlays render with `kubectl kustomize`, every Kubernetes resource passes the pinned
Kubernetes version's schemas (strict: a misspelt field fails), and the pieces agree with each other and with
trimtab's own configuration: the config every pod loads is valid, the ports probed and exposed are the ports
the processes bind, every Service and ServiceMonitor finds its pods and port, Strimzi's topics are trimtab's
topics, the learner's rendezvous is its own pod 0, GPUs are asked for where the code is told to use them.
The learner's launch script itself runs on two network-namespace hosts in tests/deploy/test_multinode.py."""

from __future__ import annotations

import copy
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.k8s import OVERLAYS, Manifests, env_value, pod_labels, pod_spec, port_numbers, render

KUBERNETES = "1.34.0"  # the oldest release we support: sidecar-free preStop `sleep`, Job index labels
REPLICAS = ("serving-current", "serving-canary")  # serving.role current and canary, behind the router
CUSTOM = {  # resources of operators the cluster installs: checked below for what trimtab relies on
    "Kafka": "kafka.strimzi.io/v1beta2",
    "KafkaNodePool": "kafka.strimzi.io/v1beta2",
    "KafkaTopic": "kafka.strimzi.io/v1beta2",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return Manifests(request.param, render(request.param))


def test_every_resource_passes_the_kubernetes_schemas_strictly(manifests: Manifests) -> None:
    for doc in manifests.docs:
        if doc["kind"] in CUSTOM:
            assert doc["apiVersion"] == CUSTOM[doc["kind"]], doc["metadata"]["name"]
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert {doc["kind"] for doc in manifests.docs} >= {
        "Namespace", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment", "StatefulSet", "Job",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", *CUSTOM,
    }  # fmt: skip


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    serving = copy.deepcopy(Manifests("dev-cpu", render("dev-cpu")).get("Deployment", "serving-current"))
    pod_spec(serving)["containers"][0]["readinesProbe"] = pod_spec(serving)["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(serving, KUBERNETES, strict=True)


def test_every_trimtab_pod_loads_a_valid_config_pointing_at_the_clusters_services(manifests: Manifests) -> None:
    services = {doc["metadata"]["name"]: doc for doc in manifests.of("Service")}
    kafka = manifests.get("Kafka", "trimtab")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    for workload in manifests.workloads():
        (container,) = pod_spec(workload)["containers"]
        if container["image"].split(":")[0] != "ghcr.io/trimtab/trimtab":
            continue
        config = manifests.config(container)
        assert config.auth.enabled is (manifests.overlay == "prod-gpu")  # production refuses calls without a key
        assert config.kafka.bootstrap_servers == f"trimtab-kafka-bootstrap:{listener['port']}"
        redis = urlsplit(config.redis.url)
        assert redis.port in [p["port"] for p in services[str(redis.hostname)]["spec"]["ports"]]
        otlp = urlsplit(config.telemetry.otlp_endpoint)
        assert otlp.port in [p["port"] for p in services[str(otlp.hostname)]["spec"]["ports"]]
        router = config.serving.router
        for address in (config.serving.openai.feedback_address, router.current, router.canary):
            host, port = address.removeprefix("dns:///").split(":")
            assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], address
        for target in (router.current, router.canary):  # resolved to every replica, balanced by the router
            assert target.startswith("dns:///") and services[target[7:].split(":")[0]]["spec"]["clusterIP"] == "None"
        for url, replicas in ((router.current_http, "serving-current"), (router.canary_http, "serving-canary")):
            parts = urlsplit(url)
            assert parts.hostname == replicas and parts.port in [p["port"] for p in services[replicas]["spec"]["ports"]]
        volumes = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        assert "/etc/trimtab" in volumes and env_value(container, "TRIMTAB_CONFIG") == "/etc/trimtab/trimtab.yaml"
        if workload["metadata"]["name"] in (*REPLICAS, "router", "learner", "ops"):  # they read the registry
            for path in (config.model.path, config.registry.root):
                assert str(path).startswith("/data/") and "/data" in volumes
        if workload["metadata"]["name"] == "learner":  # it writes versions and checkpoints
            assert not volumes["/data"].get("readOnly", False)
            assert str(config.learner.online.checkpoint_dir).startswith("/data/")


def test_the_ports_probed_and_exposed_are_the_ones_each_process_binds(manifests: Manifests) -> None:
    for name, role in zip(REPLICAS, ("current", "canary"), strict=True):
        serving = manifests.container("Deployment", name)
        config = manifests.config(serving)
        assert config.serving.role == role
        assert config.serving.host == config.feedback.grpc_host == config.telemetry.prometheus_host == "0.0.0.0"
        ports = {"grpc": config.serving.port, "http": config.serving.openai.port}
        assert port_numbers(serving) == ports | {"metrics": config.telemetry.prometheus_port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert serving[probe]["grpc"]["port"] == config.serving.port  # standard gRPC health, which trimtab serves
    router = manifests.container("Deployment", "router")
    settings = manifests.config(router).serving.router
    assert port_numbers(router) == {"grpc": settings.port, "http": settings.http_port}
    assert router["readinessProbe"]["grpc"]["port"] == settings.port
    feedback = manifests.container("Deployment", "feedback")
    metrics = config.telemetry.prometheus_port
    assert port_numbers(feedback) == {
        "grpc": config.feedback.grpc_port,
        "http": config.feedback.http_port,
        "metrics": metrics,
    }
    assert feedback["readinessProbe"]["grpc"]["port"] == config.feedback.grpc_port
    assert port_numbers(manifests.container("Deployment", "ops"))["http"] == config.ops.port
    # Draining: the pod is out of the endpoints (preStop) before SIGTERM starts trimtab's own drain, and
    # the grace period covers both (and, for a replica, its stop's deadline: its stack dump comes before SIGKILL).
    replica_stop = config.serving.drain_grace_s + config.serving.shutdown_timeout_s
    drains = {name: replica_stop for name in REPLICAS} | {
        "router": config.serving.drain_grace_s,
        "feedback": config.feedback.drain_grace_s,
    }
    for name, drain in drains.items():
        spec = pod_spec(manifests.get("Deployment", name))
        (container,) = spec["containers"]
        assert spec["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"]["seconds"] + drain


def test_every_service_and_service_monitor_finds_its_pods_and_their_port(manifests: Manifests) -> None:
    for service in manifests.of("Service"):
        selector = service["spec"]["selector"]
        pods = [w for w in manifests.workloads() if selector.items() <= pod_labels(w).items() or _indexed(w, selector)]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            for workload in pods:
                (container,) = pod_spec(workload)["containers"]
                assert target in port_numbers(container) or target in port_numbers(container).values(), (
                    f"Service {service['metadata']['name']} port {port['name']}: no container port {target}"
                )
    for monitor in manifests.of("ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        found = [s for s in manifests.of("Service") if wanted.items() <= s["metadata"].get("labels", {}).items()]
        assert found, monitor["metadata"]["name"]
        for service in found:
            assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    for budget in manifests.of("PodDisruptionBudget"):
        wanted = budget["spec"]["selector"]["matchLabels"].items()
        assert any(wanted <= pod_labels(w).items() for w in manifests.workloads()), budget["metadata"]["name"]
    for scaler in manifests.of("HorizontalPodAutoscaler"):
        manifests.get(scaler["spec"]["scaleTargetRef"]["kind"], scaler["spec"]["scaleTargetRef"]["name"])


def _indexed(workload: dict[str, object], selector: dict[str, str]) -> bool:
    """An Indexed Job's pods also carry `batch.kubernetes.io/job-completion-index` (Kubernetes sets it)."""
    index = selector.get("batch.kubernetes.io/job-completion-index")
    rest = {k: v for k, v in selector.items() if k != "batch.kubernetes.io/job-completion-index"}
    spec = workload["spec"]
    assert isinstance(spec, dict)
    return (
        index is not None
        and spec.get("completionMode") == "Indexed"
        and int(index) < spec["completions"]
        and rest.items() <= pod_labels(workload).items()  # type: ignore[arg-type]
    )


def test_every_volume_config_map_and_secret_a_pod_uses_is_rendered_or_documented(manifests: Manifests) -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests.docs}
    deploy_doc = (REPO / "docs/deploy.md").read_text()
    for workload in manifests.workloads():
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
        for source in spec["containers"][0].get("envFrom", []):
            secret = source["secretRef"]["name"]
            # prod-gpu's secret holds real credentials: the operator creates it, as docs/deploy.md shows.
            assert ("Secret", secret) in names or f"kubectl create secret generic {secret}" in deploy_doc


def test_strimzis_topics_are_trimtabs_topics_on_the_clusters_kafka(manifests: Manifests) -> None:
    config = manifests.config(manifests.container("Deployment", "feedback"))
    topics = {t["metadata"]["name"]: t for t in manifests.of("KafkaTopic")}
    specs = (config.kafka.topics.responses, config.kafka.topics.feedback, config.kafka.topics.versions)
    expected = {spec.name: spec.partitions for spec in specs}
    assert {name: t["spec"]["partitions"] for name, t in topics.items()} == expected
    kafka = manifests.get("Kafka", "trimtab")
    (pool,) = manifests.of("KafkaNodePool")
    min_isr = kafka["spec"]["kafka"]["config"]["min.insync.replicas"]
    for topic in [*topics.values(), pool]:
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "trimtab"
    for topic in topics.values():  # acks=all must be satisfiable with a broker down in prod
        assert min_isr <= topic["spec"]["replicas"] <= pool["spec"]["replicas"]
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    if manifests.overlay == "prod-gpu":
        assert min_isr == 2 and all(t["spec"]["replicas"] == 3 for t in topics.values())


def test_the_learner_is_an_indexed_job_meeting_at_its_own_pod_zero(manifests: Manifests) -> None:
    job = manifests.get("Job", "learner")
    spec, container = pod_spec(job), manifests.container("Job", "learner")
    nodes = int(env_value(container, "LEARNER_NODES") or 0)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    headless = manifests.get("Service", spec["subdomain"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    host, port = str(env_value(container, "LEARNER_RENDEZVOUS")).split(":")
    assert host == f"{job['metadata']['name']}-0.{spec['subdomain']}"
    assert int(port) in [p["port"] for p in headless["spec"]["ports"]]
    assert "torchrun" in container["args"][0] and "learn --online" in container["args"][0]
    assert spec["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] > 0


def test_gpus_are_asked_for_exactly_where_the_code_is_told_to_use_them(manifests: Manifests) -> None:
    serving, learner = manifests.container("Deployment", "serving-canary"), manifests.container("Job", "learner")
    serving_config, learner_config = manifests.config(serving), manifests.config(learner)
    containers = {name: manifests.container("Deployment", name) for name in REPLICAS} | {"learner": learner}
    gpus = {name: int(c["resources"].get("limits", {}).get("nvidia.com/gpu", 0)) for name, c in containers.items()}
    if manifests.overlay == "prod-gpu":
        per_node = int(env_value(learner, "LEARNER_PROCS_PER_NODE") or 0)
        assert gpus == {"serving-current": 1, "serving-canary": 1, "learner": per_node}
        assert (learner_config.learner.device, learner_config.learner.dtype, learner_config.learner.backend) == (
            "cuda", "bfloat16", "nccl")  # fmt: skip
        assert serving_config.engine.dtype == "bfloat16"
        assert all(pod_spec(manifests.get("Deployment", name))["tolerations"] for name in REPLICAS)
    else:
        assert set(gpus.values()) == {0}
        assert (learner_config.learner.device, learner_config.learner.backend) == ("cpu", "gloo")
        assert serving_config.engine.dtype == "float32"


def test_the_collector_and_dashboard_config_maps_are_deploy_observabilitys_files(manifests: Manifests) -> None:
    collector = manifests.named("ConfigMap", "otel-collector-config")["data"]
    assert collector == {"otel-collector.yaml": (REPO / "deploy/observability/otel-collector.yaml").read_text()}
    dashboard = manifests.named("ConfigMap", "trimtab-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["trimtab.json"] == (REPO / "deploy/observability/grafana/trimtab.json").read_text()
    (container,) = pod_spec(manifests.get("Deployment", "otel-collector"))["containers"]
    (mount,) = container["volumeMounts"]
    assert container["args"] == [f"--config={mount['mountPath']}/otel-collector.yaml"]
    otlp = yaml.safe_load(collector["otel-collector.yaml"])["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert int(otlp.rsplit(":", 1)[1]) in [p["containerPort"] for p in container["ports"]]
