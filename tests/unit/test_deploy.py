"""deploy/: every file checked by its tool's own checker where the tool is here, and structurally.

Checkers used when present (each skip names what is missing):
- compose: ``docker compose config -q``, else ``docker-compose config -q``, else
  ``docker stack config`` (the docker CLI alone; Compose v3 schema, without a daemon);
- Kubernetes: ``kubernetes-validate`` (JSON schemas of the API, strict);
- systemd: ``systemd-analyze verify`` and ``systemd-analyze security --offline``.
Structural checks parse YAML with PyYAML and cross-check the files against each
other and against the code: commands and probes are parsed by the real ``timed``
click commands, dashboard queries name metrics that NodeMetrics exports, node
configs load with the node's own config model.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from timecoin.config import load_config
from timecoin.telemetry.health import health as health_command
from timecoin.telemetry.metrics import NodeMetrics

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the environment
    yaml = None

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NODES = [f"node{i}" for i in range(1, 5)]

needs_yaml = pytest.mark.skipif(
    yaml is None, reason="PyYAML is not installed (dev extra pyyaml==6.0.3)"
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def timed_group() -> click.Group:
    """The real `timed` group, with `health` added if the lead has not wired it yet."""
    from timecoin.cli import main

    if "health" not in main.commands:
        group = click.Group("timed", commands=dict(main.commands))
        group.add_command(health_command)
        return group
    return main


def assert_timed_invocation(argv: list[str]) -> click.Context:
    """Parse *argv* (starting with the subcommand) with the real CLI; fail on a bad option."""
    group = timed_group()
    assert argv, "empty command"
    name, *args = argv
    assert name in group.commands, f"`timed {name}` is not a command"
    cmd = group.commands[name]
    try:
        return cmd.make_context(f"timed {name}", list(args), resilient_parsing=False)
    except click.UsageError as exc:  # pragma: no cover - the failure message
        pytest.fail(f"`timed {shlex.join(argv)}`: {exc}")


def _is_timed(word: str) -> bool:
    return word == "timed" or word.endswith("/bin/timed")


def strip_timed(argv: list[str]) -> list[str]:
    """Drop a leading `timed` (or a path ending in /timed) from a command line."""
    assert argv and _is_timed(argv[0]), argv
    return argv[1:]


def shell_timed_invocations(script: str) -> Iterator[list[str]]:
    """The `timed ...` commands of a small sh script: lines starting with `timed`, up to `;`."""
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if _is_timed(line.split(" ", 1)[0]):
            yield shlex.split(line.split(";", 1)[0])[1:]


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continuation"
    return out


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            stages.append((m.group(2), []))
        elif stages:
            stages[-1][1].append((word, rest))
    return stages


def test_dockerfile_is_multi_stage_with_non_root_runtime() -> None:
    stages = dockerfile_stages()
    names = [n for n, _ in stages]
    assert names == ["builder", "runtime"]
    runtime = dict(stages[-1][1])
    runtime_words = [w for w, _ in stages[-1][1]]
    assert "USER" in runtime_words
    user = [r for w, r in stages[-1][1] if w == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    # The venv comes from the builder; no compiler reaches the runtime image.
    assert any(w == "COPY" and r.startswith("--from=builder") for w, r in stages[-1][1])
    assert not any("build-essential" in r for w, r in stages[-1][1] if w == "RUN")
    assert json.loads(runtime["VOLUME"]) == ["/var/lib/timed"]
    assert {"24000", "24001", "24100", "24101"} <= set(runtime["EXPOSE"].split())
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(runtime["ENTRYPOINT"]) == ["timed"]


def test_dockerfile_builder_installs_package_and_every_plugin() -> None:
    builder = dockerfile_stages()[0][1]
    copies = [r.split() for w, r in builder if w == "COPY"]
    sources = [p for c in copies for p in c[:-1] if not p.startswith("--")]
    for src in sources:
        assert (REPO / src).exists(), f"COPY source {src} missing from the repository"
    installs = " ".join(r for w, r in builder if w == "RUN" and "pip install" in r)
    plugins = sorted(
        p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").exists()
    )
    assert len(plugins) == 3
    for plugin in plugins:
        assert f"./plugins/{plugin}" in installs
    assert re.search(r"pip install \.(\s|$)", installs)
    # Nothing the build copies is excluded by the Dockerfile's ignore file.
    ignored = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for src in sources:
        assert src not in ignored and f"**/{src}" not in ignored


def test_dockerfile_healthcheck_and_cmd_are_real_timed_invocations() -> None:
    runtime = dockerfile_stages()[-1][1]
    hc = [r for w, r in runtime if w == "HEALTHCHECK"]
    assert len(hc) == 1
    opts, _, cmd = hc[0].partition("CMD")
    assert "--interval=" in opts and "--timeout=" in opts and "--start-period=" in opts
    argv = json.loads(cmd.strip())
    ctx = assert_timed_invocation(strip_timed(argv))
    assert ctx.command.name == "health"
    # The image sets TIMED_HOME so the check finds the volume's config.toml.
    env = " ".join(r for w, r in runtime if w == "ENV")
    assert "TIMED_HOME=/var/lib/timed" in env
    entry = json.loads([r for w, r in runtime if w == "ENTRYPOINT"][0])
    cmd_args = json.loads([r for w, r in runtime if w == "CMD"][0])
    assert entry == ["timed"]
    assert assert_timed_invocation(cmd_args).command.name == "serve"


# --- docker compose ----------------------------------------------------------------------


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kw)


def _compose_checker() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and _run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    return None


def test_compose_file_passes_the_docker_checker() -> None:
    compose = DEPLOY / "docker-compose.yml"
    checker = _compose_checker()
    if checker is not None:
        res = _run([*checker, "-f", str(compose), "config", "-q"], cwd=DEPLOY)
        assert res.returncode == 0, res.stderr
        return
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI (docker compose, docker-compose or docker stack)")
    # `docker stack config` validates against the Compose v3 JSON schema without a
    # daemon. It does not know the Compose Specification's top-level `name`.
    text = "\n".join(
        line for line in compose.read_text().splitlines() if not line.startswith("name:")
    )
    res = _run([docker, "stack", "config", "-c", "-"], input=text, cwd=DEPLOY)
    assert res.returncode == 0, res.stderr
    assert "services:" in res.stdout
    # The checker really rejects what the schema does not allow.
    bad = text.replace("stop_grace_period:", "stop_grace_priod:", 1)
    assert bad != text
    assert _run([docker, "stack", "config", "-c", "-"], input=bad, cwd=DEPLOY).returncode != 0


@needs_yaml
def test_compose_runs_four_validators_and_the_observability_stack() -> None:
    doc = load_yaml(DEPLOY / "docker-compose.yml")
    services = doc["services"]
    assert set(services) == {"netns", *NODES, "jaeger", "prometheus", "grafana"}
    published = {p.split(":")[-1]: p for p in services["netns"]["ports"]}
    assert set(published) == {"16686", "9090", "3000"}
    for port in published.values():
        assert port.startswith("127.0.0.1:"), "UIs are published on the host's loopback only"
    for name, svc in services.items():
        if name != "netns":
            assert svc["network_mode"] == "service:netns", name
    assert "4317" not in " ".join(services["netns"]["ports"])
    for i, name in enumerate(NODES, 1):
        svc = services[name]
        assert svc["build"]["context"] == ".."
        assert (DEPLOY / ".." / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert svc["user"] != "root"
        config = f"/testnet/node{i}.toml"
        ctx = assert_timed_invocation(svc["command"])
        assert ctx.command.name == "serve"
        assert ctx.params["config_file"] == Path(config)
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD"
        hctx = assert_timed_invocation(strip_timed(test[1:]))
        assert hctx.command.name == "health"
        assert hctx.params["config_file"] == Path(config)
        mounts = [v.rsplit(":", 1) for v in svc["volumes"]]
        assert [m[1] for m in mounts] == ["/testnet"]
        assert mounts[0][0].endswith("../testnet}")  # ${TIMED_TESTNET_DIR:-../testnet}
        env = svc["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
        assert env["OTEL_SERVICE_NAME"] == f"timed-{name}"
        assert svc["stop_signal"] == "SIGTERM"
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    for svc in services.values():
        assert ":latest" not in svc["image"] and ":" in svc["image"], "images are pinned"


@needs_yaml
def test_compose_mounts_exist_and_match_prometheus_and_grafana() -> None:
    services = load_yaml(DEPLOY / "docker-compose.yml")["services"]
    binds = {}
    for name in ("prometheus", "grafana"):
        for v in services[name]["volumes"]:
            src, dst, *_ = v.split(":")
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src} missing"
                binds[dst] = DEPLOY / src
    prom_cfg = binds["/etc/prometheus/prometheus.yml"]
    cmd = services["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in cmd
    assert prom_cfg.name == "prometheus.yml"
    provider = load_yaml(binds["/etc/grafana/provisioning"] / "dashboards" / "timed.yml")
    path = provider["providers"][0]["options"]["path"]
    assert path in binds and list(binds[path].glob("*.json"))


# --- Prometheus ----------------------------------------------------------------------------


@needs_yaml
def test_prometheus_scrapes_each_validator_once() -> None:
    cfg = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert len(jobs) == len(cfg["scrape_configs"]), "job names are unique"
    timed = jobs["timed"]
    assert timed.get("metrics_path", "/metrics") == "/metrics"
    labels = [sc["labels"]["node"] for sc in timed["static_configs"]]
    assert labels == NODES, "one target per compose validator, labelled by service name"
    targets = [t for sc in timed["static_configs"] for t in sc["targets"]]
    assert len(set(targets)) == 4
    for t in targets:
        host, _, port = t.rpartition(":")
        assert host == "127.0.0.1", "Prometheus shares the validators' network namespace"
        assert 1024 < int(port) < 65536
    assert cfg["global"]["scrape_timeout"] < cfg["global"]["scrape_interval"] or (
        _seconds(cfg["global"]["scrape_timeout"]) < _seconds(cfg["global"]["scrape_interval"])
    )


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


# --- Grafana -------------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    m = NodeMetrics()
    m.set_validators(["TIME0x"])
    m.message_bytes("sent", "vote", 1)
    names = set()
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            names.add(s.name)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "timed.json").read_text())
    return [
        (p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]
    ]


def test_dashboard_queries_name_exported_metrics() -> None:
    names = exported_metric_names()
    used = set()
    for title, expr in dashboard_exprs():
        for metric in re.findall(r"\btimed_[a-z0-9_]+", expr):
            assert metric in names, f"panel {title!r} queries {metric}, which is not exported"
            used.add(metric)
    # Every metric family the issue lists has a panel.
    for family in (
        "timed_chain_height",
        "timed_consensus_round",
        "timed_consensus_step_duration_seconds_bucket",
        "timed_consensus_quorum_delay_seconds_bucket",
        "timed_consensus_missed_blocks_total",
        "timed_consensus_validator_power",
        "timed_mempool_txs",
        "timed_mempool_bytes",
        "timed_mempool_rejections_total",
        "timed_p2p_peers",
        "timed_p2p_message_bytes_total",
        "timed_txs_finalized_total",
        "timed_tx_submit_to_final_seconds_bucket",
        "timed_sync_height",
        "timed_sync_target_height",
    ):
        assert family in used, f"no panel shows {family}"


def test_dashboard_is_well_formed() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "timed.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "timed-prometheus"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))
            for t in p["targets"]:
                assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
                assert '{node=~"$node"' in t["expr"], "every query follows the node selector"
    assert dash["templating"]["list"][0]["name"] == "node"


@needs_yaml
def test_grafana_datasource_uid_matches_dashboard() -> None:
    ds = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    prom = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert [d["uid"] for d in prom] == ["timed-prometheus"]
    assert prom[0]["url"] == "http://127.0.0.1:9090"


# --- Kubernetes ----------------------------------------------------------------------------

K8S = DEPLOY / "k8s"


def k8s_resource_files() -> list[Path]:
    kust = load_yaml(K8S / "kustomization.yaml")
    return [K8S / r for r in kust["resources"]]


def k8s_docs() -> list[dict[str, Any]]:
    return [d for f in k8s_resource_files() for d in load_yaml_all(f)]


@needs_yaml
def test_k8s_manifests_pass_schema_validation() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (==1.37.0)"
    )
    docs = k8s_docs()
    assert docs
    for doc in docs:
        kv.validate(doc, "1.33.0", strict=True)
    # The validator does reject a misspelled field.
    bad = json.loads(json.dumps([d for d in docs if d["kind"] == "StatefulSet"][0]))
    bad["spec"]["volumeClaimTemplate"] = bad["spec"].pop("volumeClaimTemplates")
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, "1.33.0", strict=True)


@needs_yaml
def test_k8s_kustomization_and_config_map() -> None:
    kust = load_yaml(K8S / "kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    for f in k8s_resource_files():
        assert f.exists(), f
    gen = {g["name"]: g for g in kust["configMapGenerator"]}
    files = [K8S / f for f in gen["timed-config"]["files"]]
    assert [f.name for f in files] == ["config.toml"]
    # The ConfigMap's config is valid for the node itself (unknown keys are errors).
    cfg = load_config(files[0])
    assert cfg.api.listen.startswith("0.0.0.0:")
    assert cfg.api.tls_cert_file and cfg.api.tls_key_file, "non-loopback API needs TLS"


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@needs_yaml
def test_k8s_statefulset_services_and_probes() -> None:
    docs = k8s_docs()
    for d in docs:
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"]
    (sts,) = _by_kind(docs, "StatefulSet")
    assert sts["apiVersion"] == "apps/v1"
    spec = sts["spec"]
    services = {s["metadata"]["name"]: s for s in _by_kind(docs, "Service")}
    headless = services[spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= labels.items()
    (pdb,) = _by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert spec["replicas"] == 4 and pdb["spec"]["maxUnavailable"] == 1

    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    volumes = {v["name"] for v in pod["volumes"]}
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    assert claims == {"data"}
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    config_maps = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    kust = load_yaml(K8S / "kustomization.yaml")
    generated = {g["name"] for g in kust["configMapGenerator"]}
    assert "timed-config" in config_maps & generated

    (main,) = pod["containers"]
    for c in [*pod["initContainers"], main]:
        for m in c["volumeMounts"]:
            assert m["name"] in volumes | claims, f"{c['name']} mounts unknown volume {m['name']}"
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    for svc in services.values():
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{svc['metadata']['name']}: {p['targetPort']}"
    cfg = load_config(K8S / "config.toml")
    assert int(cfg.api.listen.rsplit(":", 1)[1]) == ports["api"]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert mounts["/var/lib/timed"] == "data"
    tls_dir = str(Path(cfg.api.tls_cert_file).parent)
    assert mounts[tls_dir] == "tls"

    assert assert_timed_invocation(main["args"]).command.name == "serve"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = main[probe]["exec"]["command"]
        if command[0] == "/bin/sh":
            invocations = list(shell_timed_invocations(command[-1]))
            # Liveness tolerates NOT_SERVING (1) and fails only on unreachable (2).
            assert "test $? -ne 2" in command[-1]
        else:
            invocations = [strip_timed(command)]
        assert len(invocations) == 1, probe
        ctx = assert_timed_invocation(invocations[0])
        assert ctx.command.name == "health", probe
        assert ctx.params["timeout_s"] < main[probe]["timeoutSeconds"]
    for line in shell_timed_invocations(pod["initContainers"][0]["command"][-1]):
        assert_timed_invocation(line)


@needs_yaml
def test_k8s_init_container_prepares_each_pods_home(tmp_path: Path) -> None:
    """Run the init container's script for real, with its paths moved under tmp_path."""
    from timecoin.config import NetworkName
    from timecoin.core.keys import KeyPair
    from timecoin.genesis import network_of
    from timecoin.keyfile import read_key, write_key

    (sts,) = _by_kind(k8s_docs(), "StatefulSet")
    script = sts["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    etc, home = tmp_path / "etc", tmp_path / "home"
    for sub in ("config", "genesis", "keys"):
        (etc / sub).mkdir(parents=True)
    home.mkdir()
    shutil.copy(K8S / "config.toml", etc / "config" / "config.toml")
    (etc / "genesis" / "genesis.json").write_text("{}\n")
    provided = KeyPair.generate()
    write_key(etc / "keys" / "timed-2.node_key.json", provided, network_of(NetworkName.TESTNET))
    script = script.replace("/etc/timed/", f"{etc}/").replace("/var/lib/timed", str(home))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "POD_NAME": "timed-2"}

    def run() -> None:
        res = _run(["/bin/sh", "-ec", script], env=env)
        assert res.returncode == 0, res.stderr

    run()
    cfg = load_config(home / "config.toml")
    assert cfg.p2p.external_address == "timed-2.timed-headless:24100"
    assert cfg.p2p.persistent_peers == [f"timed-{i}.timed-headless:24100" for i in (0, 1, 3)]
    assert (home / "genesis.json").read_text() == "{}\n"
    # The Secret's key is installed; the missing validator key is created by `timed init`.
    assert read_key(home / "node_key.json").pubkey == provided.pubkey
    validator = read_key(home / "validator_key.json").pubkey
    assert (home / "node_key.json").stat().st_mode & 0o077 == 0
    # A restart keeps the keys on the volume even if the Secret changes.
    (etc / "keys" / "timed-2.node_key.json").unlink()
    write_key(
        etc / "keys" / "timed-2.node_key.json", KeyPair.generate(), network_of(NetworkName.TESTNET)
    )
    run()
    assert read_key(home / "node_key.json").pubkey == provided.pubkey
    assert read_key(home / "validator_key.json").pubkey == validator


# --- systemd -------------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "timed.service"


def unit_sections() -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_is_hardened() -> None:
    unit = unit_sections()
    svc = unit["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DynamicUser": "yes",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "StateDirectory": "timed",
        "ReadWritePaths": "/var/lib/timed",
    }
    for key, value in expected.items():
        assert svc.get(key) == value, key
    assert int(svc["TimeoutStopSec"]) >= 30
    assert svc["CapabilityBoundingSet"] == ""
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    argv = shlex.split(svc["ExecStart"])
    ctx = assert_timed_invocation(strip_timed(argv))
    assert ctx.command.name == "serve"
    assert ctx.params["home"] == Path("/var/lib/timed")


def _unit_for_verify(tmp_path: Path) -> Path:
    # verify checks that ExecStart's binary exists: point it at this venv's `timed`.
    exe = Path(sys.executable).parent / "timed"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (pip install -e .)")
    path = tmp_path / "timed.service"
    path.write_text(UNIT.read_text().replace("/opt/timed/bin/timed", str(exe)))
    return path


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = _unit_for_verify(tmp_path)
    res = _run([tool, "verify", "--man=no", str(unit)])
    assert res.returncode == 0, res.stderr
    # Unknown keys and bad values are only warnings: any output is a failure here.
    assert res.stderr.strip() == "" and res.stdout.strip() == "", res.stderr + res.stdout
    bad = tmp_path / "bad" / "timed.service"
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    res = _run([tool, "verify", "--man=no", str(bad)])
    assert "Unknown key" in res.stderr


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = _unit_for_verify(tmp_path)
    res = _run([tool, "security", "--offline=true", "--no-pager", str(unit)])
    m = re.search(r"Overall exposure level for timed\.service: ([\d.]+)", res.stdout)
    if m is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {res.stderr.strip()}")
    assert float(m.group(1)) <= 2.0, res.stdout


# --- the node configs the compose file mounts ----------------------------------------------


# Ports the observability containers bind in the shared network namespace of the compose file.
OBSERVABILITY_PORTS = {
    3000,  # Grafana
    9090,  # Prometheus
    4317,
    4318,
    5778,
    14250,
    14268,
    14269,
    16685,
    16686,
    9411,  # Jaeger all-in-one
}


@pytest.fixture(scope="module")
def testnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    group = timed_group()
    if "testnet" not in group.commands:
        pytest.skip("`timed testnet` is not part of this build yet")
    out = tmp_path_factory.mktemp("deploy") / "testnet"
    res = CliRunner().invoke(group, ["testnet", "--validators", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_compose_mounts_what_timed_testnet_writes(testnet_dir: Path) -> None:
    ports: list[int] = []
    for name in NODES:
        path = testnet_dir / f"{name}.toml"
        assert path.exists(), f"compose runs `serve --config /testnet/{name}.toml`"
        cfg = load_config(path)
        # The directory is mounted at /testnet: every path in it must be relative.
        for value in (cfg.genesis_file, cfg.node_key_file, cfg.validator_key_file):
            assert not Path(value).is_absolute(), f"{name}: {value}"
            assert (testnet_dir / value).exists(), f"{name}: {value}"
        for value in (cfg.storage.path, cfg.api.cookie_file):
            assert not Path(value).is_absolute(), f"{name}: {value}"
        listens = [cfg.api.listen]
        p2p = cfg.model_dump().get("p2p", {})
        if p2p.get("listen"):
            listens.append(p2p["listen"])
        metrics = cfg.model_dump().get("telemetry", {}).get("metrics_listen")
        if metrics:
            listens.append(metrics)
        for listen in listens:
            host, _, port = listen.rpartition(":")
            assert host == "127.0.0.1", f"{name}: {listen}"
            ports.append(int(port))
    # All containers share one loopback: no two listeners may take the same port.
    assert len(ports) == len(set(ports))
    assert not set(ports) & OBSERVABILITY_PORTS


def test_prometheus_targets_are_the_testnet_metrics_ports(testnet_dir: Path) -> None:
    from timecoin.config import TelemetryConfig

    if "metrics_listen" not in TelemetryConfig.model_fields:
        pytest.skip("the node config has no telemetry.metrics_listen yet")
    if yaml is None:
        pytest.skip("PyYAML is not installed (dev extra pyyaml==6.0.3)")
    listens = []
    for name in NODES:
        telemetry = load_config(testnet_dir / f"{name}.toml").model_dump()["telemetry"]
        assert telemetry["metrics_listen"], f"{name}.toml enables no metrics endpoint"
        listens.append(telemetry["metrics_listen"])
    prom = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "timed"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == listens
