"""The Helm chart, rendered by the Helm that `helm-python-sdk` embeds, as `helm template` would.

Every test renders the real chart (deploy/helm/shipyard) with a value set: the ones under ci/
(external PostgreSQL, Redis and S3 given as values; the operator's own Secrets, fixed replicas
and gRPC; every optional part on) or a variation of one, and reads the manifests back.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import typer
import yaml

from shipyard.cli import app as cli
from shipyard.core import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "shipyard"
RELEASE, NAMESPACE = "fraud", "ml"
KUBE_OLDEST, KUBE_NEWEST = "1.30.0", kubernetes_validate.utils.latest_version()


def values(name: str) -> dict[str, Any]:
    """A value set of ci/, parsed (a fresh copy to change)."""
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}.yaml").read_text())
    return loaded


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in, mappings key by key."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = with_changes(merged[key], value)
        else:
            merged[key] = value
    return merged


def render(chosen: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every manifest the chart renders for `chosen` values."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(chosen, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


def refusal(chosen: dict[str, Any] | None) -> str:
    """The message Helm refuses `chosen` values with."""
    with pytest.raises(helm.HelmError) as refused:
        render(chosen)
    return str(refused.value)


def one(manifests: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and m["metadata"]["name"] == f"{RELEASE}-shipyard-{suffix}"
    ]
    assert len(found) == 1, f"{kind} {suffix}: {len(found)} rendered"
    return found[0]


def kinds(manifests: list[dict[str, Any]]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"])
    return dict(workload["spec"]["template"])


def workloads(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in ("Deployment", "CronJob", "Job"):
            yield f"{m['kind']} {m['metadata']['name']}", pod_template(m)


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def settings_of(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The data of the settings ConfigMap every container reads."""
    (found,) = [
        m for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] == f"{RELEASE}-shipyard"
    ]  # fmt: skip
    return dict(found["data"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def external() -> list[dict[str, Any]]:
    return render(values("external"))


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return render(values("everything"))


@pytest.fixture(scope="module")
def fixed() -> list[dict[str, Any]]:
    return render(values("fixed-replicas"))


# -- the server ----------------------------------------------------------------------------------


def test_server_probes_the_v2_health_routes_on_its_http_port(
    external: list[dict[str, Any]],
) -> None:
    server = pod_template(one(external, "Deployment", "server"))["spec"]["containers"][0]
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert server["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # model loading comes before the first answer: startup allows five minutes of it
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    service = one(external, "Service", "server")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert (
        service["spec"]["selector"]
        == pod_template(one(external, "Deployment", "server"))["metadata"]["labels"]
    )


def test_the_v2_health_routes_the_probes_use_are_the_servers(tmp_path: Path) -> None:
    from shipyard.app import create_app

    paths = {getattr(route, "path", None) for route in create_app(Settings(home=tmp_path)).routes}
    assert {"/v2/health/live", "/v2/health/ready", "/metrics"} <= paths


def test_server_listens_on_every_interface_with_its_workers_and_grpc(
    fixed: list[dict[str, Any]],
) -> None:
    server = pod_template(one(fixed, "Deployment", "server"))["spec"]["containers"][0]
    assert server["args"] == [
        "server", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--grpc-port", "8001",
    ]  # fmt: skip
    assert {"name": "grpc", "containerPort": 8001, "protocol": "TCP"} in server["ports"]
    ports = one(fixed, "Service", "server")["spec"]["ports"]
    assert {p["name"]: p["targetPort"] for p in ports} == {"http": "http", "grpc": "grpc"}


def test_termination_grace_outlasts_the_servers_drain_and_stop(
    external: list[dict[str, Any]],
) -> None:
    pod = pod_template(one(external, "Deployment", "server"))["spec"]
    server = pod["containers"][0]
    # SIGTERM: the server answers SHIPYARD_DRAIN_SECONDS more with readiness 503 ...
    drain = float(env_of(server)["SHIPYARD_DRAIN_SECONDS"]["value"])
    assert drain == Settings(drain_seconds=drain).drain_seconds > 0
    # ... then requests in flight end within the deadline, and the log writer is given 60 s to
    # turn the spool into Parquet (LogWriter.close joins its flusher that long)
    stop = math.ceil(Settings().deadline_ms / 1000) + 60
    assert pod["terminationGracePeriodSeconds"] > drain + stop
    assert "lifecycle" not in server  # no preStop sleep: the drain keeps it answering
    # and a rollout never takes a ready pod away before its replacement is ready
    strategy = one(external, "Deployment", "server")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_the_grace_period_follows_the_drain() -> None:
    longer = with_changes(values("external"), {"server": {"shutdown": {"drainSeconds": 120}}})
    pod = pod_template(one(render(longer), "Deployment", "server"))["spec"]
    assert env_of(pod["containers"][0])["SHIPYARD_DRAIN_SECONDS"]["value"] == "120"
    assert pod["terminationGracePeriodSeconds"] == 120 + 65


def test_a_stop_shorter_than_the_log_writers_flush_is_refused() -> None:
    message = refusal(
        with_changes(values("external"), {"server": {"shutdown": {"stopSeconds": 30}}})
    )
    assert "/server/shutdown/stopSeconds" in message


def test_the_drain_is_set_with_the_grace_period_not_among_the_settings() -> None:
    apart = with_changes(values("external"), {"settings": {"SHIPYARD_DRAIN_SECONDS": "5"}})
    assert "/settings/SHIPYARD_DRAIN_SECONDS" in refusal(apart)


def test_autoscaling_on_makes_an_hpa_and_leaves_the_replica_count_to_it(
    everything: list[dict[str, Any]],
) -> None:
    deployment = one(everything, "Deployment", "server")
    assert "replicas" not in deployment["spec"]  # an upgrade must not reset what the HPA chose
    hpa = one(everything, "HorizontalPodAutoscaler", "server")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
    }  # fmt: skip
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 70},
        "memory": {"type": "Utilization", "averageUtilization": 80},
    }
    # the CPU target needs a CPU request to be a share of
    server = pod_template(deployment)["spec"]["containers"][0]
    assert server["resources"]["requests"]["cpu"]


def test_autoscaling_off_fixes_the_replicas_and_makes_no_hpa(fixed: list[dict[str, Any]]) -> None:
    assert one(fixed, "Deployment", "server")["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in kinds(fixed)


def test_a_disruption_budget_keeps_all_but_one_server_up_when_there_are_two_or_more(
    fixed: list[dict[str, Any]],
) -> None:
    budget = one(fixed, "PodDisruptionBudget", "server")
    assert budget["spec"]["maxUnavailable"] == 1
    labels = pod_template(one(fixed, "Deployment", "server"))["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_no_disruption_budget_over_a_single_server_which_would_block_node_drains() -> None:
    single = with_changes(
        values("external"), {"server": {"replicas": 1, "autoscaling": {"enabled": False}}}
    )
    assert "PodDisruptionBudget" not in kinds(render(single))


def test_pods_spread_over_nodes_and_zones(external: list[dict[str, Any]]) -> None:
    spread = pod_template(one(external, "Deployment", "server"))["spec"][
        "topologySpreadConstraints"
    ]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]


# -- settings and secrets ------------------------------------------------------------------------


SECRET_VALUES = ("db-password-1234", "redis-password-1234", "s3-secret-key-1234", "session-secret")


def test_settings_come_from_the_configmap_and_secrets_from_the_secret(
    external: list[dict[str, Any]],
) -> None:
    config = settings_of(external)
    assert config["SHIPYARD_ARTIFACT_ROOT"] == "s3://ml-artifacts/shipyard"
    assert config["SHIPYARD_HOME"] == "/var/lib/shipyard"
    assert config["AWS_ENDPOINT_URL"] == "http://minio.data.svc:9000"
    assert config["SHIPYARD_LOG_FORMAT"] == "json"
    # every ConfigMap key is a real setting or the S3 client's own variable
    settings = {f"SHIPYARD_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= settings | {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}

    secret = next(m for m in external if m["kind"] == "Secret")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert stored["SHIPYARD_DATABASE_URL"].startswith("postgresql+psycopg://shipyard:")
    assert stored["SHIPYARD_REDIS_URL"].startswith("redis://:redis-password-1234@")
    assert stored["AWS_SECRET_ACCESS_KEY"] == "s3-secret-key-1234"
    assert len(stored["SHIPYARD_SESSION_SECRET"]) >= 16

    for where, template in workloads(external):
        for container in containers(template):
            env = env_of(container)
            assert container["envFrom"] == [{"configMapRef": {"name": f"{RELEASE}-shipyard"}}]
            for variable in ("SHIPYARD_DATABASE_URL", "SHIPYARD_REDIS_URL", "AWS_ACCESS_KEY_ID",
                             "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
                assert (
                    env[variable]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
                ), f"{where} {container['name']} {variable}"
            assert all("value" not in e or not any(s in str(e["value"]) for s in SECRET_VALUES)
                       for e in env.values())  # fmt: skip


def test_no_secret_value_is_written_to_a_configmap() -> None:
    for chosen in (values("external"), values("everything")):
        for manifest in render(chosen):
            if manifest["kind"] == "ConfigMap":
                text = json.dumps(manifest)
                assert not any(s in text for s in SECRET_VALUES), manifest["metadata"]["name"]
                assert not {"SHIPYARD_DATABASE_URL", "SHIPYARD_REDIS_URL",
                            "SHIPYARD_SESSION_SECRET"} & set(manifest.get("data", {}))  # fmt: skip


def test_only_the_server_holds_the_session_secret(external: list[dict[str, Any]]) -> None:
    for where, template in workloads(external):
        for container in containers(template):
            holds = "SHIPYARD_SESSION_SECRET" in env_of(container)
            assert holds == (container["name"] == "server"), f"{where} {container['name']}"


def test_secrets_of_the_operators_own_are_read_and_not_made(fixed: list[dict[str, Any]]) -> None:
    assert "Secret" not in kinds(fixed)
    server = pod_template(one(fixed, "Deployment", "server"))["spec"]["containers"][0]
    env = env_of(server)
    refs = {
        name: env[name]["valueFrom"]["secretKeyRef"] for name in env if "valueFrom" in env[name]
    }
    assert refs == {
        "SHIPYARD_DATABASE_URL": {"name": "shipyard-database", "key": "url"},
        "SHIPYARD_REDIS_URL": {"name": "shipyard-redis", "key": "url"},
        "SHIPYARD_SESSION_SECRET": {"name": "shipyard-session", "key": "secret"},
    }  # no S3 keys: the pods' IAM role reads the bucket
    account = next(m for m in fixed if m["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/shipyard"
    }


def test_secret_settings_are_refused_in_the_configmaps_settings() -> None:
    leaky = with_changes(
        values("external"), {"settings": {"SHIPYARD_DATABASE_URL": "postgresql://u:p@db/x"}}
    )
    assert "/settings/SHIPYARD_DATABASE_URL" in refusal(leaky)


def test_a_release_without_its_database_or_artifact_store_says_what_to_set() -> None:
    assert "database.url" in refusal(None)
    assert "artifacts.root" in refusal({"database": {"url": "postgresql+psycopg://u@db/x"}})


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"server": {"replicas": "three"}}, "/server/replicas"),
        ({"server": {"autoscaling": {"enabled": "yes"}}}, "/server/autoscaling/enabled"),
        ({"streams": {"name": "transactions"}}, "/streams"),
        ({"ingress": {"enabled": True, "hosts": []}}, "/ingress/hosts"),
        ({"server": {"replica": 3}}, "replica"),
    ],
)
def test_a_values_file_of_the_wrong_shape_is_refused_by_the_schema(
    tmp_path: Path, changes: dict[str, Any], path: str
) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text(yaml.safe_dump(with_changes(values("external"), changes)))
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as refused:
        chart.validate_schema(helm.values_from_yaml(bad.read_text()))
    assert path in str(refused.value)
    assert path in refusal(yaml.safe_load(bad.read_text()))  # and `helm template` refuses it


# -- every pod -----------------------------------------------------------------------------------


def test_every_pod_runs_as_non_root_on_a_read_only_root_without_capabilities(
    everything: list[dict[str, Any]],
) -> None:
    pods = dict(workloads(everything))
    assert len(pods) == 6  # server, worker, two consumers, the CronJob, the bootstrap Job
    for where, template in pods.items():
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == 10001, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(template):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            # what shipyard writes goes to emptyDirs: $SHIPYARD_HOME (spool, cache) and /tmp
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/var/lib/shipyard"] == "home", where
            assert mounts["/tmp"] == "tmp", where
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert "emptyDir" in volumes["home"], where
        assert "emptyDir" in volumes["tmp"], where
        # only the bootstrap Job talks to the Kubernetes API
        token = template["spec"]["automountServiceAccountToken"]
        assert token is where.startswith("Job "), where


def test_migrations_run_in_an_init_container_of_every_pod_unless_turned_off(
    everything: list[dict[str, Any]], fixed: list[dict[str, Any]]
) -> None:
    for where, template in workloads(everything):
        (migrate,) = template["spec"]["initContainers"]
        assert migrate["args"] == ["db", "upgrade"], where
        assert "SHIPYARD_DATABASE_URL" in env_of(migrate), where
    for where, template in workloads(fixed):
        assert "initContainers" not in template["spec"], where


def test_the_project_files_are_mounted_and_the_worker_reads_its_shipyard_yaml(
    everything: list[dict[str, Any]],
) -> None:
    project = one(everything, "ConfigMap", "project")
    assert set(project["data"]) == {"shipyard.yaml", "fraud_training.py"}
    assert yaml.safe_load(project["data"]["shipyard.yaml"])["models"]["fraud-detector"]
    assert settings_of(everything)["SHIPYARD_CONFIG"] == "/etc/shipyard/shipyard.yaml"
    worker = pod_template(one(everything, "Deployment", "worker"))
    (container,) = worker["spec"]["containers"]
    assert container["args"] == [
        "worker", "--config", "/etc/shipyard/shipyard.yaml", "--monitor-every", "1h",
    ]  # fmt: skip
    assert {"name": "project", "mountPath": "/etc/shipyard", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert one(everything, "Deployment", "worker")["spec"]["replicas"] == 2


# -- optional parts ------------------------------------------------------------------------------


def test_stream_consumers_are_made_only_when_listed(
    external: list[dict[str, Any]], everything: list[dict[str, Any]]
) -> None:
    assert not [m for m in external if "stream" in m["metadata"]["name"]]
    consumer = one(everything, "Deployment", "stream-transactions")
    assert consumer["spec"]["replicas"] == 2
    (container,) = pod_template(consumer)["spec"]["containers"]
    assert container["args"] == [
        "stream", "run", "fraud-detector",
        "--source", "redis://redis-master.data.svc:6379/transactions",
        "--sink", "redis://redis-master.data.svc:6379/scores",
        "--consumer", "$(POD_NAME)", "--metrics-port", "9109", "--metrics-host", "0.0.0.0",
        "--alert", "score > 0.9", "--entity-field", "customer_id", "--cooldown", "10m",
    ]  # fmt: skip
    assert container["ports"] == [{"name": "metrics", "containerPort": 9109, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert env_of(container)["POD_NAME"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    # SIGTERM: the consumer finishes, logs and commits the batch in hand
    assert pod_template(consumer)["spec"]["terminationGracePeriodSeconds"] >= 30
    assert one(everything, "Deployment", "stream-sensors")["spec"]["replicas"] == 1
    kafka = pod_template(one(everything, "Deployment", "stream-sensors"))["spec"]["containers"][0]
    assert kafka["args"][kafka["args"].index("--group") + 1] == "scorers"
    assert env_of(kafka)["KAFKA_BROKER"] == {"name": "KAFKA_BROKER", "value": "kafka.data.svc:9093"}


def test_batch_cronjobs_are_made_only_when_listed(
    external: list[dict[str, Any]], everything: list[dict[str, Any]]
) -> None:
    assert "CronJob" not in kinds(external)
    job = one(everything, "CronJob", "batch-nightly-scores")
    assert (job["spec"]["schedule"], job["spec"]["timeZone"]) == ("0 2 * * *", "Etc/UTC")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = pod_template(job)["spec"]["containers"]
    assert container["args"] == [
        "batch", "fraud-detector", "-i", "s3://lake/tx/latest/",
        "-o", "s3://lake/scores/latest.parquet", "--overwrite",
    ]  # fmt: skip


def test_the_ingress_is_made_only_when_enabled_and_sends_to_the_servers_http_port(
    external: list[dict[str, Any]], everything: list[dict[str, Any]]
) -> None:
    assert "Ingress" not in kinds(external)
    ingress = one(everything, "Ingress", "server")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "fraud-api.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": f"{RELEASE}-shipyard-server",
        "port": {"name": "http"},
    }
    assert ingress["spec"]["tls"] == [
        {"secretName": "fraud-api-tls", "hosts": ["fraud-api.example.com"]}
    ]


def test_service_monitors_scrape_the_servers_and_the_consumers_metrics(
    external: list[dict[str, Any]], everything: list[dict[str, Any]]
) -> None:
    assert "ServiceMonitor" not in kinds(external)
    server = one(everything, "ServiceMonitor", "server")
    assert server["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert server["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    service = one(everything, "Service", "server")
    assert (
        server["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    stream = one(everything, "ServiceMonitor", "stream")
    assert stream["spec"]["endpoints"][0]["port"] == "metrics"
    metrics = one(everything, "Service", "stream-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    assert (
        stream["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    )


def test_the_dashboard_ships_in_a_configmap_grafanas_sidecar_loads(
    external: list[dict[str, Any]], everything: list[dict[str, Any]]
) -> None:
    assert not [m for m in external if m["metadata"]["name"].endswith("-dashboard")]
    configmap = one(everything, "ConfigMap", "dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "shipyard"}
    shipped = json.loads(configmap["data"]["shipyard.json"])
    assert shipped == json.loads((CHART / "dashboards" / "shipyard.json").read_text())


def test_the_bootstrap_admin_key_job_is_a_hook_with_rbac_for_its_one_secret(
    external: list[dict[str, Any]], fixed: list[dict[str, Any]]
) -> None:
    job = one(external, "Job", "bootstrap")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    (container,) = pod_template(job)["spec"]["containers"]
    assert container["command"][:3] == [
        "python", "/opt/bootstrap/bootstrap-admin-key.py", f"{RELEASE}-shipyard-admin-key",
    ]  # fmt: skip
    script = one(external, "ConfigMap", "bootstrap")["data"]["bootstrap-admin-key.py"]
    assert script == (CHART / "files" / "bootstrap-admin-key.py").read_text().rstrip("\n")
    role = one(external, "Role", "bootstrap")
    assert role["rules"][0] == {
        "apiGroups": [""], "resources": ["secrets"],
        "resourceNames": [f"{RELEASE}-shipyard-admin-key"], "verbs": ["get"],
    }  # fmt: skip
    binding = one(external, "RoleBinding", "bootstrap")
    assert binding["subjects"][0]["name"] == pod_template(job)["spec"]["serviceAccountName"]
    # the RBAC and the script exist before the Job runs, and all of it goes once it succeeded
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap"):
        annotations = one(external, kind, "bootstrap")["metadata"]["annotations"]
        assert int(annotations["helm.sh/hook-weight"]) < 0, kind
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"], kind
    assert not [m for m in fixed if m["metadata"]["name"].endswith("-bootstrap")]


# -- what the chart passes to shipyard exists ------------------------------------------------------


def _options(*path: str) -> set[str]:
    """The options of `shipyard PATH...`, from the command line's own definition."""
    command: Any = typer.main.get_command(cli)
    context = command.context_class(command)
    for name in path:
        found = command.get_command(context, name) if hasattr(command, "get_command") else None
        assert found is not None, f"`shipyard {' '.join(path)}` is not a command"
        command, context = found, found.context_class(found, parent=context)
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_every_command_and_option_the_chart_runs_exists(everything: list[dict[str, Any]]) -> None:
    seen = set()
    for where, template in workloads(everything):
        for container in containers(template):
            args = container.get("args")
            if not args:
                continue
            path = args[:2] if args[0] in ("stream", "db") else args[:1]
            known = _options(*path)
            for arg in args:
                if arg.startswith("--"):
                    assert arg in known, f"{where}: `shipyard {' '.join(path)}` has no {arg}"
            seen.add(" ".join(path))
    assert seen == {"server", "worker", "stream run", "batch", "db upgrade"}
    # the bootstrap script's commands
    assert {"--scope", "--name", "--json"} <= _options("keys", "create")
    assert _options("keys", "revoke")


# -- valid Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["external", "fixed-replicas", "everything"])
def test_every_manifest_is_valid_kubernetes_and_lints_strictly(name: str) -> None:
    chosen = values(name)
    report = helm.lint(CHART, chosen, strict=True, kube_version=f"v{KUBE_OLDEST}")
    assert not report["errors"]
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]
    for manifest in render(chosen):
        if manifest["kind"] == "ServiceMonitor":
            continue  # not a Kubernetes kind: scripts/check_deploy.py checks it
        for version in (KUBE_OLDEST, KUBE_NEWEST):
            kubernetes_validate.validate(manifest, version, strict=True)


# -- scripts/check_deploy.py ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_deploy", ROOT / "scripts" / "check_deploy.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dashboard_queries_only_metrics_and_labels_shipyard_exports(check: ModuleType) -> None:
    exported = check.exported_metrics()
    assert "shipyard_predictions_total" in exported
    assert exported["shipyard_stream_events_total"] == {"model", "group", "outcome"}
    dashboard = json.loads((CHART / "dashboards" / "shipyard.json").read_text())
    failures = check.Failures()
    charted = check.check_dashboard(failures, dashboard, exported)
    assert not failures
    # every metric of the server and the consumers is on it
    assert {check._base(s) for s in exported} == {check._base(s) for s in charted}


def test_a_dashboard_query_of_an_unknown_metric_or_label_fails_the_check(check: ModuleType) -> None:
    dashboard = {
        "panels": [
            {"title": "typo", "targets": [{"refId": "A", "expr": "sum(rate(shipyard_prediction_total[5m]))"}]},
            {"title": "label", "targets": [{"refId": "A", "expr": 'sum by (tenant) (shipyard_queue_rows{model="m"})'}]},
        ]
    }  # fmt: skip
    failures = check.Failures()
    check.check_dashboard(failures, dashboard, check.exported_metrics())
    assert len(failures) == 2
    assert "shipyard_prediction_total is not a metric shipyard exports" in failures[0]
    assert "label 'tenant'" in failures[1]


def test_a_reference_to_a_missing_port_or_object_fails_the_check(
    check: ModuleType, everything: list[dict[str, Any]]
) -> None:
    failures = check.Failures()
    check.check_references(failures, "as rendered", everything)
    assert not failures
    broken = copy.deepcopy(everything)
    one(broken, "Service", "server")["spec"]["ports"][0]["targetPort"] = "web"
    one(broken, "HorizontalPodAutoscaler", "server")["spec"]["scaleTargetRef"]["name"] = "gone"
    check.check_references(failures, "broken", broken)
    assert any("no port named web" in f for f in failures)
    assert any("scales Deployment gone" in f for f in failures)
