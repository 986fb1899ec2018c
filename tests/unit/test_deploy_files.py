"""Deploy files: every file under deployments/ validates against its platform's schema and agrees with the others.

- Serve configs: `ray.serve.schema.ServeDeploySchema` (plus a key-by-key typo check, since the schema accepts
  unknown keys), and their `args:` with rayhet's own `AppArgs`/`RayhetConfig`; the fleet's start-up plan solves.
- RayService: KubeRay's v1 CRD (read from the shared anchors, never copied here) with `jsonschema`, made strict
  the way the API server is (README of the anchors), plus KubeRay's own Go rules the schema cannot express;
  its `serveConfigV2` is the fleet Serve config. The Ray autoscaler's own KubeRay reader turns each group into
  a node type, and each pool's replica must fit exactly the group of its pool (that is how a replica target
  becomes a node of the right group).
- Anyscale: pydantic models written from the documented fields (the SDK's licence rules it out as a test
  dependency): docs.anyscale.com/reference/service-api and /reference/compute-config-api.
- Dockerfiles: parsed; base images are the official `rayproject/ray:2.60.0-py312` ones, Ray pinned.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deployments"
IMAGE_ROOT = "/home/ray/rayhet"  # where deployments/docker/ puts the repository in the images
RAY_VERSION = "2.60.0"
SERVE_FILES = sorted((DEPLOY / "serve").glob("*.yaml"))
FLEET_POOLS = {"a10g": "A10G", "l4": "L4", "h100": "H100", "cpu": None}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def anchors_dir() -> Path | None:
    """The shared anchors (KubeRay CRDs): $RAYHET_ANCHORS, else <repo>/../shared/anchors."""
    for cand in (os.environ.get("RAYHET_ANCHORS"), REPO.parent / "shared" / "anchors"):
        if cand and (Path(cand) / "kuberay" / "crds").is_dir():
            return Path(cand)
    return None


def fleet_config(path: Path = DEPLOY / "serve" / "fleet.yaml"):
    """The fleet's RayhetConfig with the image's paths mapped onto this checkout."""
    from rayhet.app import AppArgs
    from rayhet.config import parse_config

    args = AppArgs.model_validate(load(path)["applications"][0]["args"])
    text = json.dumps(args.config).replace(IMAGE_ROOT, str(REPO))
    return parse_config(json.loads(text), str(path))


# -- Serve config files --------------------------------------------------------------------------------------
def typo_keys(data: dict, model: type[BaseModel], where: str) -> list[str]:
    """Keys of `data` that `model` does not declare (ServeDeploySchema accepts unknown keys silently)."""
    return [f"{where}.{k}" for k in data if k not in model.model_fields]


@pytest.mark.parametrize("path", SERVE_FILES, ids=lambda p: p.name)
def test_serve_config_validates(path):
    from ray.serve.schema import (DeploymentSchema, RayActorOptionsSchema, ServeApplicationSchema,
                                  ServeDeploySchema)

    from rayhet.app import AppArgs, resolve_config

    data = load(path)
    ServeDeploySchema.model_validate(data)
    bad = typo_keys(data, ServeDeploySchema, "<root>")
    for i, app in enumerate(data["applications"]):
        bad += typo_keys(app, ServeApplicationSchema, f"applications[{i}]")
        for j, dep in enumerate(app.get("deployments", [])):
            bad += typo_keys(dep, DeploymentSchema, f"applications[{i}].deployments[{j}]")
            bad += typo_keys(dep.get("ray_actor_options", {}), RayActorOptionsSchema,
                             f"applications[{i}].deployments[{j}].ray_actor_options")
        assert app["import_path"] == "rayhet.app:build"
        config = resolve_config(AppArgs.model_validate(app.get("args") or {}))  # RayhetConfig validation
        allowed = {"ingress"} | {f"pool-{p.name}" for p in config.pools}
        for dep in app.get("deployments", []):
            assert dep["name"] in allowed, f"{path.name}: no deployment {dep['name']!r} in {sorted(allowed)}"
    assert not bad, f"{path.name}: keys the Serve schema does not know: {bad}"


def test_embedded_cpu_file_is_the_embedded_default():
    from rayhet.app import AppArgs, resolve_config
    from rayhet.config import embedded_config

    args = load(DEPLOY / "serve" / "embedded-cpu.yaml")["applications"][0]["args"]
    assert resolve_config(AppArgs.model_validate(args)) == embedded_config()


def test_fleet_pools_profiles_and_startup_plan():
    from rayhet.app import startup_plan

    config = fleet_config()
    assert {p.name: p.accelerator_type for p in config.pools} == FLEET_POOLS
    for p in config.pools:
        assert Path(p.profile).is_file(), f"pool {p.name}: profile {p.profile} is not in the repository"
        assert p.resources == {f"rayhet_pool_{p.name}": 0.001}
    assert config.controller.enabled and config.server.api_keys_env
    plan = startup_plan(config)
    assert plan.status == "optimal" and sum(plan.replicas.values()) >= 1
    for p in config.pools:
        assert p.min_replicas <= plan.replicas[p.name] <= p.max_replicas


def test_fleet_ingress_override_restates_its_cpus():
    app = load(DEPLOY / "serve" / "fleet.yaml")["applications"][0]
    (ingress,) = [d for d in app["deployments"] if d["name"] == "ingress"]
    # A config file's ray_actor_options replace the code's: num_cpus must match what rayhet would set.
    assert ingress["ray_actor_options"]["num_cpus"] == fleet_config().server.ingress_num_cpus
    assert ingress["ray_actor_options"]["resources"] == {"rayhet_pool_cpu": 0.001}


# -- KubeRay RayService -------------------------------------------------------------------------------------
def _like_apiserver(s: dict) -> dict:
    """Drop `required` entries that have a default, forbid unknown fields (as `kubectl apply` does)."""
    if props := s.get("properties"):
        s["required"] = [r for r in s.get("required", []) if "default" not in props.get(r, {})]
        if "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
        for p in props.values():
            _like_apiserver(p)
    for k in ("items", "additionalProperties"):
        if isinstance(s.get(k), dict):
            _like_apiserver(s[k])
    for k in ("anyOf", "allOf", "oneOf"):
        for sub in s.get(k, []):
            _like_apiserver(sub)
    return s


@pytest.fixture(scope="session")
def rayservice_validator():
    jsonschema = pytest.importorskip("jsonschema")
    anchors = anchors_dir()
    if anchors is None:
        pytest.skip("KubeRay CRDs not found: set RAYHET_ANCHORS to the folder holding kuberay/crds/")
    with gzip.open(anchors / "kuberay" / "crds" / "ray.io_rayservices.yaml.gz", "rt") as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft4Validator(_like_apiserver(schema))


@pytest.fixture(scope="module")
def rayservice():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kuberay" / "rayservice.yaml").read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def test_rayservice_validates_against_the_crd(rayservice, rayservice_validator):
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    errors = sorted(rayservice_validator.iter_errors(rayservice), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message[:300]}" for e in errors)


def test_the_crd_check_catches_mistakes(rayservice, rayservice_validator):
    """The strict validator is not vacuous: a typo and an unquoted quantity fail, as on the API server."""
    bad = json.loads(json.dumps(rayservice))
    bad["spec"]["rayClusterConfig"]["workerGroupSpec"] = bad["spec"]["rayClusterConfig"].pop("workerGroupSpecs")
    assert list(rayservice_validator.iter_errors(bad))
    bad = json.loads(json.dumps(rayservice))
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["resources"]["GPU"] = 1
    assert list(rayservice_validator.iter_errors(bad))


LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def test_rayservice_follows_kuberays_own_rules(rayservice):
    """What KubeRay's Go validation adds to the schema (ray-operator/controllers/ray/utils/validation.go)."""
    name = rayservice["metadata"]["name"]
    assert len(name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]["version"] == "v2"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for group in [head, *cluster["workerGroupSpecs"]]:
        params = group.get("rayStartParams", {})
        if group.get("resources"):
            clash = {"num-cpus", "num-gpus", "memory", "resources"} & set(params)
            assert not clash, f"{group.get('groupName', 'head')}: `resources:` and rayStartParams {clash}"
        assert "labels" not in params
        for k, v in group.get("labels", {}).items():
            assert LABEL_KEY.match(k) and LABEL_VALUE.match(v), (k, v)
    for g in cluster["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], g["groupName"]


def test_rayservice_serves_the_fleet_and_uses_the_rayhet_images(rayservice):
    assert yaml.safe_load(rayservice["spec"]["serveConfigV2"]) == load(DEPLOY / "serve" / "fleet.yaml")
    cluster = rayservice["spec"]["rayClusterConfig"]
    images = {g.get("groupName", "head"): g["template"]["spec"]["containers"][0]["image"]
              for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]}
    assert {g for g, i in images.items() if i.endswith("-gpu")} == {"a10g", "l4", "h100"}
    assert {g for g, i in images.items() if i.endswith("-cpu")} == {"head", "cpu"}


def _replica_demands(config) -> dict[str, dict[str, float]]:
    """What one replica of each deployment asks Ray for (as rayhet's builder sets it, plus the file's override)."""
    from rayhet.config import engine_settings_dict
    from rayhet.serve.builder import pool_deployment_options

    out = {}
    for p in config.pools:
        a = pool_deployment_options(p, engine_settings_dict(config, p), 1)["ray_actor_options"]
        out[p.name] = {"CPU": a["num_cpus"], "GPU": a["num_gpus"], **a.get("resources", {})}
    app = load(DEPLOY / "serve" / "fleet.yaml")["applications"][0]
    (ing,) = [d["ray_actor_options"] for d in app["deployments"] if d["name"] == "ingress"]
    out["ingress"] = {"CPU": ing["num_cpus"], **ing.get("resources", {})}
    return {k: {r: v for r, v in d.items() if v} for k, d in out.items()}


def _per_node(node: dict[str, float], demand: dict[str, float]) -> int:
    """Replicas of `demand` that fit on an empty node with `node` resources (0: it never fits)."""
    return min((math.floor(node.get(r, 0) / v + 1e-9) for r, v in demand.items()), default=0)


def test_each_pool_scales_exactly_its_own_group(rayservice):
    """Run the Ray autoscaler's KubeRay reader on the groups and place each pool's replica demand.

    The autoscaler starts a node of a group whose node type can hold a pending replica; each pool's demand must
    fit its own group and no other, and the group's bounds must hold the pool's min/max replicas.
    """
    reader = pytest.importorskip("ray.autoscaler._private.kuberay.autoscaling_config")
    cluster = rayservice["spec"]["rayClusterConfig"]
    head = reader._node_type_from_group_spec(cluster["headGroupSpec"], is_head=True)
    assert head["resources"]["CPU"] == 0  # nothing is placed on the head
    groups = {g["groupName"]: reader._node_type_from_group_spec(g, is_head=False) for g in cluster["workerGroupSpecs"]}
    assert set(groups) == set(FLEET_POOLS)
    config = fleet_config()
    demands = _replica_demands(config)
    for pool, demand in demands.items():
        fits = {g for g, t in groups.items() if _per_node(t["resources"], demand) > 0}
        assert fits == {"cpu" if pool == "ingress" else pool}, f"{pool} {demand} fits groups {fits}"
    for p in config.pools:
        t = groups[p.name]
        per_node = _per_node(t["resources"], demands[p.name])
        if p.name == "cpu":  # the ingress replicas share the CPU nodes
            ing = config.server.ingress_replicas * demands["ingress"]["CPU"]
            per_node = math.floor((t["resources"]["CPU"] - ing) / demands["cpu"]["CPU"])
        assert t["max_workers"] * per_node >= p.max_replicas, f"group {p.name} cannot hold max_replicas"
        assert t["min_workers"] == math.ceil(p.min_replicas / per_node), f"group {p.name} minReplicas"
        if accel := FLEET_POOLS[p.name]:
            assert t["labels"].get("ray.io/accelerator-type") == accel


# -- Anyscale -------------------------------------------------------------------------------------------------
class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeadNode(_Doc):
    """HeadNodeConfig (docs.anyscale.com/reference/compute-config-api#headnodeconfig)."""

    instance_type: str | None = None
    resources: dict[str, float] | None = None
    labels: dict[str, str] | None = None
    required_resources: dict[str, Any] | None = None
    required_labels: dict[str, str] | None = None
    advanced_instance_config: dict[str, Any] | None = None
    flags: dict[str, Any] | None = None
    cloud_deployment: dict[str, Any] | str | None = None


class WorkerGroup(HeadNode):
    """WorkerNodeGroupConfig (docs.anyscale.com/reference/compute-config-api#workernodegroupconfig)."""

    name: str | None = None
    min_nodes: int = Field(0, ge=0)
    max_nodes: int = Field(10, ge=1)
    market_type: Literal["ON_DEMAND", "SPOT", "PREFER_SPOT"] = "ON_DEMAND"

    @model_validator(mode="after")
    def _shape(self) -> "WorkerGroup":
        if self.instance_type is None and self.required_resources is None:
            raise ValueError("give instance_type or required_resources")
        if self.max_nodes < self.min_nodes:
            raise ValueError("max_nodes < min_nodes")
        return self


class ComputeConfig(_Doc):
    """ComputeConfig (docs.anyscale.com/reference/compute-config-api#computeconfig)."""

    cloud: str | None = None
    cloud_resource: str | None = None
    head_node: HeadNode | None = None
    worker_nodes: list[WorkerGroup] | None = None
    min_resources: dict[str, float] | None = None
    max_resources: dict[str, float] | None = None
    zones: list[str] | None = Field(None, min_length=1)
    enable_cross_zone_scaling: bool = False
    auto_select_worker_config: bool = False
    advanced_instance_config: dict[str, Any] | None = None
    flags: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _groups(self) -> "ComputeConfig":
        names = [w.name or w.instance_type for w in self.worker_nodes or []]
        if len(set(names)) != len(names):
            raise ValueError(f"worker group names repeat: {names}")
        if self.worker_nodes and self.auto_select_worker_config:
            raise ValueError("auto_select_worker_config must be false when worker_nodes is given")
        return self


class ServiceConfig(_Doc):
    """ServiceConfig (docs.anyscale.com/reference/service-api#serviceconfig); `applications` are Serve apps."""

    name: str | None = None
    applications: list[dict[str, Any]] = Field(..., min_length=1)
    image_uri: str | None = None
    containerfile: str | None = None
    ray_version: str | None = Field(None, pattern=r"^\d+\.\d+\.\d+$")
    registry_login_secret: str | None = None
    compute_config: str | ComputeConfig | None = None
    working_dir: str | None = None
    excludes: list[str] | None = None
    requirements: str | list[str] | None = None
    env_vars: dict[str, str] | None = None
    py_modules: list[str] | None = None
    py_executable: str | None = None
    cloud: str | None = None
    project: str | None = None
    query_auth_token_enabled: bool = True
    http_options: dict[str, Any] | None = None
    grpc_options: dict[str, Any] | None = None
    logging_config: dict[str, Any] | None = None
    tracing_config: dict[str, Any] | None = None
    ray_gcs_external_storage_config: dict[str, Any] | None = None
    version_name: str | None = None
    tags: dict[str, str] | None = None

    @field_validator("applications")
    @classmethod
    def _serve_apps(cls, apps):
        from ray.serve.schema import ServeApplicationSchema

        for a in apps:
            ServeApplicationSchema.model_validate(a)
        return apps

    @model_validator(mode="after")
    def _rules(self) -> "ServiceConfig":
        if self.image_uri and self.containerfile:
            raise ValueError("image_uri and containerfile are mutually exclusive")
        if self.registry_login_secret and not self.image_uri:
            raise ValueError("registry_login_secret needs image_uri")
        if {"host", "port", "root_path"} & set(self.http_options or {}):
            raise ValueError("http_options: host, port and root_path are not allowed")
        if "port" in (self.grpc_options or {}):
            raise ValueError("grpc_options: port is not allowed")
        return self


def test_anyscale_service_validates_and_serves_the_fleet():
    service = ServiceConfig.model_validate(load(DEPLOY / "anyscale" / "service.yaml"))
    assert service.applications == load(DEPLOY / "serve" / "fleet.yaml")["applications"]
    assert service.ray_version == RAY_VERSION and service.image_uri.endswith("-gpu")
    assert service.compute_config == "rayhet-fleet"


def test_anyscale_compute_has_the_rayservice_groups(rayservice):
    compute = ComputeConfig.model_validate(load(DEPLOY / "anyscale" / "compute.yaml"))
    assert compute.head_node.resources == {"CPU": 0}
    kuberay = {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    groups = {w.name: w for w in compute.worker_nodes}
    assert set(groups) == set(kuberay) == set(FLEET_POOLS)
    custom = lambda res: {k for k in res if k not in ("CPU", "GPU", "memory")}  # noqa: E731
    demands = _replica_demands(fleet_config())
    config = fleet_config()
    for name, w in groups.items():
        assert custom(w.resources) == custom(kuberay[name]["resources"]), name
        assert _per_node(w.resources, demands[name]) > 0, f"{name}: its pool's replica does not fit"
        others = [g for g in groups if g != name and _per_node(groups[g].resources, demands[name]) > 0]
        assert not others, f"{name}'s replica also fits {others}"
        per_node = _per_node(w.resources, demands[name])
        assert w.max_nodes * per_node >= config.pool(name).max_replicas


def test_anyscale_model_rejects_what_the_docs_forbid():
    from pydantic import ValidationError

    ok = {"applications": [{"import_path": "rayhet.app:build"}]}
    ServiceConfig.model_validate(ok)
    for bad in ({**ok, "http_options": {"port": 9000}}, {**ok, "image_uri": "a", "containerfile": "b"},
                {**ok, "ray_serve_config": {}}, {"applications": []}, {**ok, "ray_version": "2.60"}):
        with pytest.raises(ValidationError):
            ServiceConfig.model_validate(bad)
    with pytest.raises(ValidationError):
        ComputeConfig.model_validate({"worker_nodes": [{"instance_type": "m5.large", "min_nodes": 3, "max_nodes": 2}]})


# -- images ---------------------------------------------------------------------------------------------------
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            op, _, rest = buf.strip().partition(" ")
            out.append((op.upper(), rest.strip()))
            buf = ""
    assert not buf, f"{path}: dangling line continuation"
    return out


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile(kind):
    path = DEPLOY / "docker" / f"Dockerfile.{kind}"
    ins = dockerfile_instructions(path)
    known = {"FROM", "ARG", "ENV", "USER", "RUN", "COPY", "WORKDIR", "LABEL", "EXPOSE", "ENTRYPOINT", "CMD"}
    assert {op for op, _ in ins} <= known
    froms = [a for op, a in ins if op == "FROM"]
    assert froms == [f"rayproject/ray:{RAY_VERSION}-py312" + ("-gpu" if kind == "gpu" else "")]
    runs = " ".join(a for op, a in ins if op == "RUN")
    assert f"ray[serve]=={RAY_VERSION}" in runs and "-c /tmp/constraints.txt" in runs
    assert ("/home/ray/rayhet[gpu]" in runs) == (kind == "gpu")
    assert any(op == "COPY" and a.endswith(IMAGE_ROOT) for op, a in ins)
    for _, a in ins:
        if _ == "RUN":
            shlex.split(a.replace("$", ""))  # balanced quotes
    # the project pins the same Ray minor version
    assert 'ray[serve]==2.60.*' in (REPO / "pyproject.toml").read_text()


def test_image_paths_in_the_fleet_exist_in_the_repository():
    text = (DEPLOY / "serve" / "fleet.yaml").read_text()
    for m in re.findall(re.escape(IMAGE_ROOT) + r"/(\S+)", text):
        assert (REPO / m).is_file(), f"fleet.yaml names {IMAGE_ROOT}/{m}, which the image would not have"


# -- examples -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_compiles(path):
    compile(path.read_text(), str(path), "exec")


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.sh")), ids=lambda p: p.name)
def test_example_script_parses(path):
    subprocess.run(["bash", "-n", str(path)], check=True)
