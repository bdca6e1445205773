"""deploy/: the Ray cluster launcher config, the KubeRay manifest, the Dockerfile and the
operations guide, checked the way their own tools check them, and against the real
``plinth`` command line.

- ray-cluster.yaml goes through what ``ray up`` does to a config before it touches a
  node: Ray's prepare_config (provider defaults, the local provider's node type) and
  validate_config (the ray-schema.json shipped in the ray wheel).
- kuberay-raycluster.yaml: every object against kubernetes.schema.yaml (the RayCluster v1
  fields KubeRay requires, core/v1 for the rest, unknown fields refused), then the
  references between them: volumes, claims, Secrets, the Service's port; and its
  NetworkPolicy: a port serving metrics beyond loopback is reachable only from the
  cluster's own pods and the chosen scrapers, the router port from anyone.
- Every file that serves metrics beyond loopback says so in a comment.
- Every ``plinth ...`` command in the four files is parsed by the real click CLI
  (plinth.cli.main) without running it, and every ``await_cluster.py ...`` command by
  that helper's own parser. The ids of test_every_plinth_command_... list them.
- Tiered storage: the server and its routers take one tier URL from one place on every
  node (the launcher's ~/plinth/tier.env, KubeRay's optional ConfigMap plinth-tier), never
  from their own command lines, and every pod gets the store's credentials.
- Dockerfile: its instructions, read structurally (Docker is not needed).

Runs in the pytest process: no network, no Docker, no Ray cluster (Ray is imported for
its config validation only).
"""

from __future__ import annotations

import copy
import re

import click
import jsonschema
import pytest
import yaml

from tests.deploy.deploy_files import (DOCKERFILE, KUBERAY, LAUNCHER, OPERATIONS, REPO,
                                       commands_in, dockerfile_instructions, exec_form,
                                       image_paths, invocations, kubernetes_objects,
                                       launcher_config, load_await_cluster, option_value,
                                       pinned_ray_version, pod_groups, pyproject, ray_cluster,
                                       shell_words)

SCHEMA_FILE = REPO / "tests" / "deploy" / "kubernetes.schema.yaml"
PLINTH_COMMANDS = invocations("plinth")
AWAIT_COMMANDS = invocations("await_cluster.py")


def _command_id(entry) -> str:
    file, where, argv = entry
    return f"{file} {where}: {' '.join(argv)}"


# --- the plinth command line -------------------------------------------------------------

def _all_commands(command: click.Command):
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _all_commands(sub)


@pytest.fixture
def plinth_cli(monkeypatch):
    """Parse a ``plinth ...`` argv with the real CLI without running it: every command's
    callback does nothing, and paths need not exist (they name files on the cluster's
    nodes). Raises click.UsageError for an unknown command or option or a bad value."""
    from plinth.cli import main

    for command in _all_commands(main):
        monkeypatch.setattr(command, "callback", lambda *args, **kwargs: None)
        for param in command.params:
            if isinstance(param.type, click.Path):
                monkeypatch.setattr(param.type, "exists", False)

    def parse(argv: list[str]) -> None:
        assert argv[0] == "plinth"
        main.main(args=argv[1:], prog_name="plinth", standalone_mode=False)

    return parse


@pytest.mark.parametrize("file, where, argv", PLINTH_COMMANDS, ids=map(_command_id, PLINTH_COMMANDS))
def test_every_plinth_command_in_deploy_is_accepted_by_the_real_cli(plinth_cli, file, where, argv):
    # Given a plinth command line from a deploy file; When the real CLI parses it
    try:
        plinth_cli(argv)
        refusal = None
    except click.UsageError as exc:
        refusal = exc.format_message()
    # Then no command or option is unknown and no value is refused
    assert refusal is None, f"{file} {where}: {' '.join(argv)}\n  {refusal}"


def test_the_files_start_the_broker_and_the_routers_where_the_guide_says():
    found = {(file, where.split("[")[0], argv[1]) for file, where, argv in PLINTH_COMMANDS
             if len(argv) > 1}
    expected = {
        (LAUNCHER.name, "head_start_ray_commands", "serve"),
        (LAUNCHER.name, "worker_start_ray_commands", "router"),
        (KUBERAY.name, "head/ray-head", "serve"),
        (KUBERAY.name, "routers/ray-worker", "router"),
        (DOCKERFILE.name, "ENTRYPOINT+CMD", "serve"),
    }
    assert expected <= found
    guide = {argv[1] for file, _, argv in PLINTH_COMMANDS if file == OPERATIONS.name and len(argv) > 1}
    assert {"keygen", "status", "topic", "shards"} <= guide


def test_the_command_finder_sees_through_wrappers_and_quoted_scripts_but_not_into_arguments():
    script = ("ulimit -n 65536; X=1 nohup sh -c 'exec plinth serve --cluster-name plinth'"
              " >> log 2>&1 < /dev/null &\nplinth status  # a comment")
    assert commands_in(shell_words(script), "plinth") == [
        ["plinth", "serve", "--cluster-name", "plinth"], ["plinth", "status"]]
    assert commands_in(["/usr/bin/tini", "--", "plinth", "serve"], "plinth") == [["plinth", "serve"]]
    assert commands_in(shell_words("python ~/x/await_cluster.py --nodes 3 || true"),
                       "await_cluster.py") == [["await_cluster.py", "--nodes", "3"]]


@pytest.mark.parametrize("argv", [
    ["plinth", "serve", "--no-such-option", "1"],
    ["plinth", "serve", "--shards", "many"],
    ["plinth", "serve", "--fsync-policy", "sometimes"],
    ["plinth", "no-such-command"],
], ids=" ".join)
def test_the_cli_check_refuses_an_unknown_option_a_bad_value_or_an_unknown_command(plinth_cli, argv):
    with pytest.raises(click.UsageError):
        plinth_cli(argv)


@pytest.mark.parametrize("file, where, argv", AWAIT_COMMANDS, ids=map(_command_id, AWAIT_COMMANDS))
def test_every_await_cluster_command_in_deploy_is_accepted_by_the_helper(file, where, argv):
    load_await_cluster().parse_args(argv[1:])   # argparse exits (SystemExit 2) if not


# --- the Ray cluster launcher config ---------------------------------------------------------

def ray_up_prepare(config: dict) -> dict:
    """What ``ray up`` makes of a config before it touches a node
    (ray.autoscaler._private.commands._bootstrap_config, without its cache and the
    provider's bootstrap): provider defaults filled in, the local provider's one node
    type, setup commands merged, node resources filled in; then validate_config, which
    checks it against ray/autoscaler/ray-schema.json and raises
    jsonschema.ValidationError."""
    from ray.autoscaler._private.providers import _get_node_provider_cls
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    provider_cls = _get_node_provider_cls(prepared["provider"])
    prepared = provider_cls.fillout_available_node_types_resources(prepared)
    validate_config(prepared)
    return prepared


def test_the_launcher_config_passes_the_validation_ray_up_runs():
    ray_up_prepare(launcher_config())


def test_the_launcher_config_starts_a_head_and_two_workers_that_stay_up():
    config = launcher_config()
    prepared = ray_up_prepare(config)
    assert config["provider"]["type"] == "local"
    assert len(config["provider"]["worker_ips"]) == 2
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == prepared["max_workers"] == 2


def _rename(key: str, new_key: str):
    def mutate(config):
        config[new_key] = config.pop(key)
    return mutate


def _set(key: str, value):
    def mutate(config):
        config[key] = value
    return mutate


@pytest.mark.parametrize("mutate", [
    _rename("head_start_ray_commands", "head_start_ray_command"),
    _rename("file_mounts", "file_mount"),
    _set("idle_timeout_minutes", "five"),
    _set("auth", "ubuntu"),
    _set("rsync_exclude", "**/.git"),
], ids=["misspelled head_start_ray_commands", "misspelled file_mounts",
        "idle_timeout_minutes a string", "auth a string", "rsync_exclude a string"])
def test_rays_validation_refuses_a_misspelled_key_or_a_value_of_the_wrong_type(mutate):
    # Given the launcher config with one mistake
    config = launcher_config()
    mutate(config)
    # Then the validation `ray up` runs refuses it
    with pytest.raises(jsonschema.ValidationError):
        ray_up_prepare(config)


def test_the_launcher_syncs_every_file_its_plinth_commands_read_and_the_ray_token():
    config = launcher_config()
    mounts = config["file_mounts"]
    commands = [argv for file, _, argv in PLINTH_COMMANDS if file == LAUNCHER.name]
    assert commands
    for argv in commands:
        for option in ("--curve-secret-key", "--authorized-keys"):
            assert option_value(argv, option) in mounts, (option, argv)
    assert "~/.ray/auth_token" in mounts


def test_the_launcher_keeps_rays_control_store_in_an_external_redis_with_a_synced_password():
    # Given the head's commands and the files the launcher syncs
    config = launcher_config()
    (start,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    # Then the head's `ray start` points the GCS at Redis (Ray's GCS fault tolerance) ...
    assert re.search(r"RAY_REDIS_ADDRESS=\S+:\d+ ray start --head", start), start
    # ... with a password read from a file the launcher syncs and setup makes private
    password_file = re.search(r'--redis-password="\$\(cat (\S+)\)"', start).group(1)
    assert password_file in config["file_mounts"]
    assert any(c.startswith("chmod 600") and password_file in c for c in config["setup_commands"])


def test_the_launcher_installs_plinth_from_the_synced_checkout_with_the_pinned_ray():
    config = launcher_config()
    assert config["file_mounts"]["~/plinth/src"] == "."
    installs = [c for c in config["setup_commands"] if "pip install" in c and "~/plinth/src" in c]
    assert len(installs) == 1
    assert f'"ray[default]=={pinned_ray_version()}"' in installs[0]


# --- the KubeRay manifest --------------------------------------------------------------------

def kubernetes_schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text())


def schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(kubernetes_schema())
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(doc)]


def test_the_kubernetes_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(kubernetes_schema())


@pytest.mark.parametrize("kind", ["RayCluster", "Service", "PersistentVolumeClaim", "NetworkPolicy"])
def test_every_object_in_the_kuberay_manifest_matches_the_schema(kind):
    assert schema_errors(kubernetes_objects()[kind]) == []


def _head_container(cluster):
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def _worker_group(cluster):
    return cluster["spec"]["workerGroupSpecs"][0]


RAYCLUSTER_MISTAKES = {
    "misspelled groupName": lambda c: _worker_group(c).update(groupname=_worker_group(c).pop("groupName")),
    "misspelled headGroupSpec": lambda c: c["spec"].update(headGroupspec=c["spec"].pop("headGroupSpec")),
    "misspelled container image": lambda c: _head_container(c).update(imgae=_head_container(c).pop("image")),
    "no maxReplicas": lambda c: _worker_group(c).pop("maxReplicas"),
    "no head rayStartParams": lambda c: c["spec"]["headGroupSpec"].pop("rayStartParams"),
    "a number in rayStartParams": lambda c: _worker_group(c)["rayStartParams"].update({"num-cpus": 2}),
    "replicas a string": lambda c: _worker_group(c).update(replicas="2"),
    "a container port out of range": lambda c: _head_container(c)["ports"].append({"containerPort": 74000}),
    "apiVersion v1alpha1": lambda c: c.update(apiVersion="ray.io/v1alpha1"),
    "misspelled redisAddress": lambda c: c["spec"]["gcsFaultToleranceOptions"].update(
        redisAdress=c["spec"]["gcsFaultToleranceOptions"].pop("redisAddress")),
    "a redis password both given and referenced": lambda c: c["spec"]["gcsFaultToleranceOptions"][
        "redisPassword"].update(value="hunter2"),
}


@pytest.mark.parametrize("mistake", list(RAYCLUSTER_MISTAKES))
def test_the_schema_refuses_a_raycluster_with_a_misspelled_missing_or_mistyped_field(mistake):
    # Given the RayCluster with one mistake
    cluster = copy.deepcopy(ray_cluster())
    RAYCLUSTER_MISTAKES[mistake](cluster)
    # Then the schema names at least one error
    assert schema_errors(cluster) != []


def test_the_raycluster_keeps_rays_control_store_in_redis_with_the_password_from_a_secret():
    # Given the RayCluster
    options = kubernetes_objects()["RayCluster"]["spec"]["gcsFaultToleranceOptions"]
    # Then KubeRay's GCS fault tolerance is on, and the Redis password is never in the file
    assert re.fullmatch(r"\S+:\d+", options["redisAddress"])
    assert options["redisPassword"] == {"valueFrom": {"secretKeyRef": {
        "name": "plinth-gcs-redis", "key": "password"}}}


def test_the_raycluster_is_a_head_and_two_workers_running_the_plinth_image():
    cluster = ray_cluster()
    (workers,) = cluster["spec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    for group, spec in pod_groups(cluster).items():
        (container,) = spec["containers"]
        assert container["image"] == "plinth:latest", group
    assert cluster["spec"]["rayVersion"] == pinned_ray_version()


def test_every_volume_mount_names_a_volume_of_its_pod_and_the_claim_is_in_the_manifest():
    objects = kubernetes_objects()
    claim = objects["PersistentVolumeClaim"]["metadata"]["name"]
    for group, spec in pod_groups(objects["RayCluster"]).items():
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in spec["containers"]:
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, (group, mount)
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values()
                  if "persistentVolumeClaim" in v}
        assert claims == {claim}, group


def _mounted_from(spec: dict, container: dict, path: str) -> dict:
    """The volume whose mount holds ``path`` in ``container``, by the longest mount path."""
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    holders = [m for m in container["volumeMounts"]
               if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert holders, f"{path} is on no volume of {container['name']}"
    return volumes[max(holders, key=lambda m: len(m["mountPath"]))["name"]]


def test_the_plinth_commands_read_keys_from_secrets_and_write_data_to_the_claim():
    for group, spec in pod_groups(ray_cluster()).items():
        (container,) = spec["containers"]
        words = [*container.get("command", []), *container.get("args", [])]
        (argv,) = commands_in(words, "plinth")
        for option in ("--curve-secret-key", "--authorized-keys"):
            assert "secret" in _mounted_from(spec, container, option_value(argv, option)), (group, option)
        if argv[1] == "serve":
            data = _mounted_from(spec, container, option_value(argv, "--data-dir"))
            assert "persistentVolumeClaim" in data, group


def test_the_service_sends_clients_to_the_router_port_of_every_pod():
    objects = kubernetes_objects()
    cluster, service = objects["RayCluster"], objects["Service"]
    # KubeRay labels every pod of the cluster with ray.io/cluster: <name>
    assert service["spec"]["selector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    (port,) = service["spec"]["ports"]
    for group, spec in pod_groups(cluster).items():
        (container,) = spec["containers"]
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        target = ports.get(port["targetPort"], port["targetPort"])
        (argv,) = commands_in([*container["command"], *container["args"]], "plinth")
        assert option_value(argv, "--listen").endswith(f":{target}"), group
        assert container["readinessProbe"]["tcpSocket"]["port"] in (target, port["targetPort"]), group


# --- who may reach the metrics port (issue 11, finding 8) -----------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _covers(rule: dict, port_number: int, port_name: str | None) -> bool:
    """Whether an ingress rule lets traffic to the port through (no ports: every port)."""
    ports = rule.get("ports")
    return not ports or any(p.get("port") in (None, port_number, port_name) for p in ports)


def _anyone(peer: dict) -> bool:
    """Whether a NetworkPolicy peer lets in more than chosen pods: an address block, or a
    selector that selects everything ({} matches every pod, or every namespace)."""
    if "ipBlock" in peer:
        return True
    selectors = [peer[key] for key in ("podSelector", "namespaceSelector") if key in peer]
    return not any(selector.get("matchLabels") or selector.get("matchExpressions")
                   for selector in selectors)


def metrics_exposure_problems(objects: dict[str, dict]) -> list[str]:
    """Where the manifest lets more than the cluster's own pods and chosen scrapers reach
    a port that a plinth command serves metrics on beyond loopback; and whether the
    client port stays open to clients."""
    cluster = objects["RayCluster"]
    own_pods = {"ray.io/cluster": cluster["metadata"]["name"]}
    policy = objects.get("NetworkPolicy")
    if policy is None:
        return ["no NetworkPolicy"]
    spec = policy["spec"]
    if spec["podSelector"] != {"matchLabels": own_pods} or "Ingress" not in spec.get("policyTypes", []):
        return [f"the NetworkPolicy does not restrict ingress to the pods {own_pods}"]
    rules, problems = spec.get("ingress", []), []
    for group, pod in pod_groups(cluster).items():
        (container,) = pod["containers"]
        (argv,) = commands_in([*container["command"], *container["args"]], "plinth")
        if option_value(argv, "--metrics-host") in (None, *LOOPBACK_HOSTS):
            continue
        number = int(option_value(argv, "--metrics-port"))
        name = next((p.get("name") for p in container["ports"] if p["containerPort"] == number), None)
        reaching = [rule for rule in rules if _covers(rule, number, name)]
        peers = [peer for rule in reaching for peer in rule.get("from") or [{}]]
        problems += [f"{group}: metrics port {number} open to {peer or 'anyone'}"
                     for peer in peers if _anyone(peer)]
        if not any(peer.get("podSelector", {}).get("matchLabels") != own_pods for peer in peers):
            problems.append(f"{group}: no scraper may reach metrics port {number}")
        listen = int(option_value(argv, "--listen").rsplit(":", 1)[1])
        listen_name = next((p.get("name") for p in container["ports"] if p["containerPort"] == listen), None)
        if not any(_covers(rule, listen, listen_name) and not rule.get("from") for rule in rules):
            problems.append(f"{group}: clients cannot reach the router port {listen}")
    return problems


def test_only_the_clusters_pods_and_prometheus_may_reach_the_metrics_port_clients_the_router():
    assert metrics_exposure_problems(kubernetes_objects()) == []


def _ingress(objects) -> list[dict]:
    return objects["NetworkPolicy"]["spec"]["ingress"]


NETWORK_POLICY_MISTAKES = {
    "no policy": lambda o: o.pop("NetworkPolicy"),
    "the client rule covers every port": lambda o: _ingress(o)[1].pop("ports"),
    "the scraper rule lets any pod in": lambda o: _ingress(o)[2]["from"][0].update(podSelector={}, namespaceSelector={}),
    "the scraper rule is an address block": lambda o: _ingress(o)[2].update({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
    "no scraper rule": lambda o: _ingress(o).pop(2),
    "no client rule": lambda o: _ingress(o).pop(1),
    "another cluster's pods": lambda o: o["NetworkPolicy"]["spec"].update(podSelector={"matchLabels": {"ray.io/cluster": "x"}}),
}


@pytest.mark.parametrize("mistake", list(NETWORK_POLICY_MISTAKES))
def test_the_metrics_exposure_check_finds_an_open_metrics_port_or_a_closed_router_port(mistake):
    # Given the manifest with one mistake in its NetworkPolicy
    objects = copy.deepcopy(kubernetes_objects())
    NETWORK_POLICY_MISTAKES[mistake](objects)
    # Then the check names at least one problem
    assert metrics_exposure_problems(objects) != []


@pytest.mark.parametrize("file", sorted({file for file, _, argv in PLINTH_COMMANDS
                                         if option_value(argv, "--metrics-host") not in (None, *LOOPBACK_HOSTS)}))
def test_every_file_that_serves_metrics_beyond_loopback_says_so_in_a_comment(file):
    text = (REPO / "deploy" / file).read_text()
    comments = " ".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line) \
        if file != OPERATIONS.name else text
    hosts = {option_value(argv, "--metrics-host") for f, _, argv in PLINTH_COMMANDS if f == file}
    for host in hosts - {None, *LOOPBACK_HOSTS}:
        assert f"--metrics-host {host}" in comments and "authentication" in comments, file


@pytest.mark.parametrize("command", ["serve", "router"])
def test_plinth_serves_metrics_on_loopback_unless_told_otherwise(command):
    from plinth.cli import main

    (host,) = [p for p in main.commands[command].params if p.name == "metrics_host"]
    assert host.default == "127.0.0.1"


# --- both cluster configs -------------------------------------------------------------------

def _node_count(file: str) -> int:
    if file == LAUNCHER.name:
        return 1 + len(launcher_config()["provider"]["worker_ips"])
    return 1 + sum(group["replicas"] for group in ray_cluster()["spec"]["workerGroupSpecs"])


@pytest.mark.parametrize("file", [LAUNCHER.name, KUBERAY.name])
def test_the_broker_waits_for_every_node_the_config_starts(file):
    waits = [int(option_value(argv, "--nodes")) for f, _, argv in AWAIT_COMMANDS
             if f == file and option_value(argv, "--nodes")]
    assert waits == [_node_count(file)]


@pytest.mark.parametrize("file", [LAUNCHER.name, KUBERAY.name])
def test_the_routers_join_and_await_the_broker_by_the_name_plinth_serve_gives_it(file):
    commands = [argv for f, _, argv in PLINTH_COMMANDS if f == file]
    (name,) = {option_value(argv, "--cluster-name") for argv in commands if argv[1] == "serve"}
    routers = [argv for argv in commands if argv[1] == "router"]
    assert routers and {option_value(argv, "--cluster-name") for argv in routers} == {name}
    awaited = {option_value(argv, "--broker") for f, _, argv in AWAIT_COMMANDS if f == file}
    assert awaited - {None} == {name}


# --- tiered storage: one store for the server and its routers, on every node -------------

TIER_VARIABLES = ("PLINTH_TIER_URL", "PLINTH_TIER_CACHE_BYTES")


@pytest.mark.parametrize("file", [LAUNCHER.name, KUBERAY.name])
def test_no_plinth_command_names_a_tier_url_the_others_could_disagree_with(file):
    # The server and its routers take it from one place (PLINTH_TIER_URL), not each
    # from its own command line
    for f, where, argv in PLINTH_COMMANDS:
        if f == file:
            assert option_value(argv, "--tier-url") is None, (where, argv)
            assert option_value(argv, "--tier-cache-bytes") is None, (where, argv)


def launcher_tier_environment() -> dict[str, str]:
    """The tier variables the launcher's setup commands (run on every node) write to
    ~/plinth/tier.env, which ~/.bashrc sources for every later command."""
    setup = launcher_config()["setup_commands"]
    (writes,) = [c for c in setup if "PLINTH_TIER_URL" in c]
    assert "> ~/plinth/tier.env" in writes
    assert any(". ~/plinth/tier.env" in c and ">> ~/.bashrc" in c for c in setup)
    (exported,) = [w for w in shell_words(writes) if w.startswith("export ")]
    words = shell_words(exported)[1:]
    return dict(word.split("=", 1) for word in words)


def test_the_launcher_gives_every_node_one_tier_url_and_cache_that_the_real_cli_takes(
        plinth_cli, monkeypatch):
    # Given the tier variables the setup commands give every node
    env = launcher_tier_environment()
    assert set(env) == set(TIER_VARIABLES)
    # Then the URL is off (empty) or one plinth serve takes
    if env["PLINTH_TIER_URL"]:
        from plinth.server import ServeOptions

        ServeOptions(data_dir=REPO, tier_url=env["PLINTH_TIER_URL"]).tier_options()
    # And the serve and router commands parse with them in their environment (a cache
    # outside its limits would be refused here)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for f, where, argv in PLINTH_COMMANDS:
        if f == LAUNCHER.name:
            plinth_cli(argv)


def test_an_empty_tier_url_in_the_environment_means_no_tiered_storage(monkeypatch, tmp_path):
    # The launcher's default: PLINTH_TIER_URL="" must not reach the server as a URL ""
    from click.testing import CliRunner

    from plinth.cli import main

    taken = []
    monkeypatch.setattr("logging.basicConfig", lambda **_: None)
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: taken.append(options) or 0)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d")],
                                env={"PLINTH_TIER_URL": ""})
    assert result.exit_code == 0, result.output
    assert taken[0].tier_url is None


def test_every_kuberay_pod_takes_the_tier_url_and_credentials_from_the_same_optional_objects():
    # Given the head (plinth serve) and the workers (plinth router, and shards: Ray
    # places shard actors on every pod)
    sources = {}
    for group, spec in pod_groups(ray_cluster()).items():
        (container,) = spec["containers"]
        env = {var["name"]: var for var in container["env"]}
        # Then each takes both variables from the ConfigMap plinth-tier, optionally (no
        # ConfigMap: no tiered storage), and the store's credentials from an optional Secret
        refs = tuple(env[name]["valueFrom"]["configMapKeyRef"] for name in TIER_VARIABLES)
        assert all(ref["name"] == "plinth-tier" and ref["optional"] is True for ref in refs)
        assert {"secretRef": {"name": "plinth-tier-credentials", "optional": True}} in \
            container["envFrom"], group
        sources[group] = refs
    # And every pod the same ones
    assert len({repr(refs) for refs in sources.values()}) == 1, sources


# --- the Dockerfile ------------------------------------------------------------------------

def dockerfile_problems(text: str) -> list[str]:
    """What keeps ``text`` from being the Plinth image, by its structure."""
    instructions = dockerfile_instructions(text)
    names = [name for name, _ in instructions]
    problems = []
    froms = [arguments for name, arguments in instructions if name == "FROM"]
    if not names or names[0] not in ("FROM", "ARG") or not froms:
        problems.append("does not start FROM a base image")
    elif not re.match(r"(python:3\.1[1-9]|rayproject/ray)\S*", froms[-1]):
        problems.append(f"FROM {froms[-1]}: not python:3.11+ or rayproject/ray")
    copied = [arguments for name, arguments in instructions if name in ("COPY", "ADD")]
    if not any("pyproject.toml" in arguments.split() for arguments in copied):
        problems.append("does not copy pyproject.toml")
    runs = [arguments for name, arguments in instructions if name == "RUN"]
    if not any(re.search(r"pip install (--?\S+ )*\.( |$)", run) for run in runs):
        problems.append("no RUN pip install . of the checkout")
    exposed = {port.split("/")[0] for name, arguments in instructions if name == "EXPOSE"
               for port in arguments.split()}
    if "7400" not in exposed:
        problems.append("does not EXPOSE 7400")
    started = [exec_form(a) for n, a in instructions if n in ("ENTRYPOINT", "CMD")]
    if not commands_in([word for words in started for word in words], "plinth"):
        problems.append("ENTRYPOINT/CMD runs no plinth command")
    return problems


def test_the_dockerfile_is_the_plinth_image_by_its_structure():
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


DOCKERFILE_MISTAKES = {
    "no EXPOSE": lambda text: re.sub(r"^EXPOSE .*$", "", text, flags=re.MULTILINE),
    "another base": lambda text: text.replace("FROM python:3.11-slim", "FROM alpine:3.20"),
    "no install": lambda text: text.replace("pip install --no-cache-dir . ", "true "),
    "no plinth CMD": lambda text: re.sub(r'^CMD \[.*?\]$', 'CMD ["sleep", "infinity"]', text,
                                         flags=re.MULTILINE | re.DOTALL),
}


@pytest.mark.parametrize("mistake", list(DOCKERFILE_MISTAKES))
def test_the_dockerfile_check_finds_a_missing_expose_base_install_or_plinth_command(mistake):
    broken = DOCKERFILE_MISTAKES[mistake](DOCKERFILE.read_text())
    assert broken != DOCKERFILE.read_text()
    assert dockerfile_problems(broken) != []


def test_the_image_copies_every_package_directory_pyproject_builds():
    package_dirs = set(pyproject()["tool"]["setuptools"]["package-dir"].values())
    copied = set(image_paths(dockerfile_instructions(DOCKERFILE.read_text())))
    assert package_dirs | {"pyproject.toml", "setup.py", "README.md"} <= copied


def test_the_image_has_a_c_compiler_where_it_builds_the_extensions():
    runs = [a for n, a in dockerfile_instructions(DOCKERFILE.read_text()) if n == "RUN"]
    installing = [run for run in runs if re.search(r"pip install (--?\S+ )*\.( |$)", run)]
    assert installing and all(re.search(r"apt-get install .*\bgcc\b", run) for run in installing)


def test_the_image_holds_the_start_up_helper_where_the_kuberay_commands_run_it():
    in_image = image_paths(dockerfile_instructions(DOCKERFILE.read_text()))["deploy/await_cluster.py"]
    used = set(re.findall(r"\S*await_cluster\.py", KUBERAY.read_text()))
    assert used == {in_image}


def test_the_image_installs_the_ray_version_plinth_pins():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    args = dict(arguments.split("=", 1) for name, arguments in instructions
                if name == "ARG" and "=" in arguments)
    assert args["RAY_VERSION"] == pinned_ray_version()
    assert any('"ray[default]==${RAY_VERSION}"' in a for n, a in instructions if n == "RUN")
