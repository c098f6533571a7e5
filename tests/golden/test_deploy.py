"""deploy/: compose stack, Dockerfile, Prometheus/Alertmanager configs and Kubernetes manifests.

No cluster or container engine runs here, so the manifests are checked statically
against the code: YAML parses, required fields exist, image names, ports and probe
paths agree with csf's defaults and routes, the PrometheusRule carries exactly the
generated rules, the compose services reference files that exist, and every csf
config in deploy/ loads with `load_config`. Prometheus and Alertmanager configs are
checked by their own tools (promtool, amtool) when installed.

Two files are derived: ``deploy/k8s/prometheusrule.yaml`` (from rules/generated/) and
``deploy/k8s/configmap.yaml`` (csf config + the built-in pack). Regenerate them with
``CSF_UPDATE_DEPLOY=1 .venv/bin/pytest tests/golden/test_deploy.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector import __version__
from detector.service.config import DEFAULT_PORT, load_config
from rules.generate import DEFAULT_JOB
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
IMAGE = f"csf:{__version__}"
SIMULATOR_PORT = 9467
UPDATE = os.environ.get("CSF_UPDATE_DEPLOY") == "1"

K8S_CONFIG = """\
# csf configuration (mounted at /etc/csf/config.yaml; keys: detector/service/config.py).
# Point the pipeline at the query API that holds your platform's metrics: Prometheus,
# or Thanos Query / Mimir / Cortex for many clusters (one pipeline per platform; shard
# pipelines across Deployments with CSF_SHARD, see deploy/README.md).
host: 0.0.0.0
port: 9466
data_dir: /var/lib/csf
evaluation_interval: 60s
log_level: info
pipelines:
  - name: platform
    pack: pack.yaml
    source:
      type: prometheus
      url: http://prometheus-operated.monitoring.svc:9090
      timeout: 30s
      retries: 2
"""


# --------------------------------------------------------------------------- helpers


class _Literal(yaml.SafeDumper):
    pass


_Literal.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Literal, sort_keys=False, width=100000, allow_unicode=True)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def k8s_objects() -> dict[str, dict[str, Any]]:
    """kind -> object for every manifest in deploy/k8s (one object per kind)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc | {"_file": path.name}
    return out


def generated_rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    # the stack serves the default pack: its rules only (rules/generated/ holds every built-in pack's)
    for path in sorted((ROOT / "rules/generated").glob("csf-microlearning-video-*.yml")):
        groups += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return groups


def render_prometheus_rule() -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "csf", "labels": {"app.kubernetes.io/name": "csf"}},
        "spec": {"groups": generated_rule_groups()},
    }
    return (
        "# generated from rules/generated/ (alerting + recording rules), do not edit.\n"
        "# Regenerate: CSF_UPDATE_DEPLOY=1 .venv/bin/pytest tests/golden/test_deploy.py\n"
        "# Add the label your Prometheus selects rules by (e.g. release: kube-prometheus-stack).\n"
        + dump(doc)
    )


def render_configmap() -> str:
    pack = (ROOT / "detector/spec/packs/default.yaml").read_text(encoding="utf-8")
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "csf-config", "labels": {"app.kubernetes.io/name": "csf"}},
        "data": {"config.yaml": K8S_CONFIG, "pack.yaml": pack},
    }
    return (
        "# csf config and pack (here: the built-in pack, verbatim; replace it with yours).\n"
        "# Regenerate: CSF_UPDATE_DEPLOY=1 .venv/bin/pytest tests/golden/test_deploy.py\n" + dump(doc)
    )


@pytest.mark.parametrize(
    ("name", "render"), [("prometheusrule.yaml", render_prometheus_rule), ("configmap.yaml", render_configmap)]
)
def test_derived_manifests_are_current(name: str, render: Any) -> None:
    path = K8S / name
    text = render()
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, (
        f"deploy/k8s/{name} is stale: CSF_UPDATE_DEPLOY=1 .venv/bin/pytest tests/golden/test_deploy.py"
    )


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_have_required_fields_and_agree() -> None:
    objs = k8s_objects()
    assert set(objs) == {
        "Deployment", "Service", "ConfigMap", "ServiceMonitor", "PrometheusRule", "PodDisruptionBudget",
    }  # fmt: skip
    for kind, obj in objs.items():
        assert obj["apiVersion"] and obj["metadata"]["name"], kind
    assert objs["PodDisruptionBudget"]["apiVersion"] == "policy/v1"
    assert objs["Deployment"]["apiVersion"] == "apps/v1"

    dep = objs["Deployment"]["spec"]
    pod_labels = dep["template"]["metadata"]["labels"]
    selector = dep["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert dep["replicas"] >= 2, "two replicas per shard for HA"
    (container,) = dep["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": DEFAULT_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    sec = dep["template"]["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] != 0
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert re.fullmatch(r"\d+/\d+", env["CSF_SHARD"])

    # the ConfigMap is mounted where the args point, and the Secret where the env points
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == objs["ConfigMap"]["metadata"]["name"]
    config_arg = container["args"][container["args"].index("--config") + 1]
    assert Path(config_arg).parent == Path(mounts["config"])
    assert Path(config_arg).name in objs["ConfigMap"]["data"]
    assert Path(env["CSF_AUTH_TOKEN_FILE"]).parent == Path(mounts["token"])
    assert "secret" in volumes["token"]

    svc = objs["Service"]
    assert svc["metadata"]["name"] == DEFAULT_JOB, "the Service name is the job label the rules watch"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (port,) = svc["spec"]["ports"]
    assert port["port"] == DEFAULT_PORT and port["targetPort"] in ports

    mon = objs["ServiceMonitor"]["spec"]
    assert mon["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in mon["endpoints"]] == [port["name"]]
    assert [e["path"] for e in mon["endpoints"]] == ["/metrics"]

    pdb = objs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["minAvailable"] < dep["replicas"], "a PDB at the replica count blocks every drain"

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(o["_file"] for o in objs.values())


def test_prometheus_rule_equals_the_generated_rules() -> None:
    rule = k8s_objects()["PrometheusRule"]
    assert rule["spec"]["groups"] == generated_rule_groups()
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"CSFBindingConstraint", "CSFDetectorDown"} <= alerts


def test_probe_and_metrics_paths_are_routes_of_the_app(tmp_path: Path) -> None:
    from detector.service.app import create_app

    app = create_app(load_config(None, {"CSF_DATA_DIR": str(tmp_path)}))
    routes = {getattr(r, "path", None) for r in app.routes}
    assert {"/readyz", "/healthz", "/metrics", "/"} <= routes


def test_k8s_configmap_config_loads(tmp_path: Path) -> None:
    data = k8s_objects()["ConfigMap"]["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "config.yaml", {})
    (pipeline,) = config.pipelines
    assert pipeline.pack_path == str(tmp_path / "pack.yaml")
    assert pipeline.source.type == "prometheus"
    assert config.port == DEFAULT_PORT


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    ins = dockerfile_instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    kinds = [k for k, _ in ins]
    user = [v for k, v in ins if k == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    # the package is installed as root, then the image runs unprivileged
    run_pip = next(i for i, (k, v) in enumerate(ins) if k == "RUN" and "pip install ." in v)
    assert run_pip < kinds.index("USER")
    assert ("EXPOSE", str(DEFAULT_PORT)) in ins
    health = next(v for k, v in ins if k == "HEALTHCHECK")
    assert "/healthz" in health and "9466" in health
    assert next(v for k, v in ins if k == "ENTRYPOINT") == '["csf"]'
    # every COPY source exists in the build context (the repository root)
    for k, v in ins:
        if k == "COPY":
            *sources, _ = v.split()
            for src in sources:
                assert (ROOT / src).exists(), src
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# --------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_services_and_files() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == {"csf", "simulator", "prometheus", "alertmanager", "grafana"}
    for name in ("csf", "simulator"):
        s = services[name]
        assert s["image"] == IMAGE
        assert (DEPLOY / s["build"]["context"] / s["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert services["csf"]["command"][:1] == ["serve"]
    assert services["csf"]["ports"] == [f"{DEFAULT_PORT}:{DEFAULT_PORT}"]
    sim = services["simulator"]["command"]
    assert sim[:2] == ["simulate", "--serve"] and sim[sim.index("--port") + 1] == str(SIMULATOR_PORT)
    # every bind mount names a file or directory of the repository
    named = set(c.get("volumes", {}))
    for name, s in services.items():
        for vol in s.get("volumes", []):
            src = vol.split(":")[0]
            if src in named:
                continue
            assert src.startswith("."), (name, vol)
            assert (DEPLOY / src).exists(), (name, src)
    for name, s in services.items():
        for secret in s.get("secrets", []):
            assert secret in c["secrets"], (name, secret)
        for dep in s.get("depends_on", []):
            assert dep in services, (name, dep)
    # the csf config mounted into the container is the one its command reads
    mounts = dict(v.split(":")[:2] for v in services["csf"]["volumes"] if v.startswith("."))
    config_in_container = services["csf"]["command"][services["csf"]["command"].index("--config") + 1]
    assert config_in_container in mounts.values()
    # Grafana gets the provisioning and the dashboard directory it points at
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/csf.yaml").read_text())
    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana_mounts["./grafana/dashboards"] == prov["providers"][0]["options"]["path"]
    # Prometheus gets the generated rules where its config looks for them
    prom_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"] if v.startswith("."))
    rules_dir = prom_mounts["../rules/generated"]
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert prom["rule_files"] == [f"{rules_dir}/csf-microlearning-video-*.yml"]
    assert prom_mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


def test_compose_addresses_are_consistent() -> None:
    services = compose()["services"]
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert jobs[DEFAULT_JOB] == [f"csf:{DEFAULT_PORT}"], "job label must be the one the rules watch"
    assert jobs["platform"] == [f"simulator:{SIMULATOR_PORT}"]
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"] and "9093:9093" in services["alertmanager"]["ports"]
    for target in [t for ts in jobs.values() for t in ts]:
        host = target.split(":")[0]
        assert host == "localhost" or host in services, target
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    config = load_config(DEPLOY / "csf/config.yaml", {})
    urls = {p.source.url for p in config.pipelines if p.source.type == "prometheus"}
    assert urls == {"http://prometheus:9090"}
    assert config.host == "0.0.0.0" and config.port == DEFAULT_PORT


def test_every_csf_config_in_deploy_loads() -> None:
    configs = [p for p in DEPLOY.rglob("*.yaml") if _is_csf_config(p)]
    assert DEPLOY / "csf/config.yaml" in configs
    for path in configs:
        config = load_config(path, {})
        assert config.pipelines, path


def _is_csf_config(path: Path) -> bool:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and "pipelines" in doc


# --------------------------------------------------------------------------- real tools


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    text = (DEPLOY / "prometheus/prometheus.yml").read_text(encoding="utf-8")
    local = text.replace("/etc/prometheus/rules/", str(ROOT / "rules/generated") + "/")
    assert local != text
    (tmp_path / "prometheus.yml").write_text(local, encoding="utf-8")
    r = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 rule files found" in r.stdout + r.stderr


def test_alertmanager_config_passes_amtool() -> None:
    amtool = require_binary("amtool")
    r = subprocess.run([amtool, "check-config", str(DEPLOY / "alertmanager/alertmanager.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    # the route groups by the labels the generated alerts carry
    am = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    severities = {r["labels"]["severity"] for g in generated_rule_groups() for r in g["rules"] if "alert" in r}
    routed = {m.split("=")[1].strip('"') for r in am["route"]["routes"] for m in r["matchers"]}
    assert severities - routed <= {"ticket"}, "ticket is the default receiver"
