"""Checks that the rendered Kubernetes manifests agree with the server's config file.

Usage: deploy_consistency.py SPOOL_TOML RENDERED_YAML

Schema validation cannot see these: the ports of `listen` and `metrics_listen` against the
container ports, probes, Services and scrape annotations; `data_dir` against the volume mount
(embedded storage; with `postgres_url`, as in the cluster overlay, there is no volume);
the config file's path against the ConfigMap mount; the auth file against its Secret's mount;
and terminationGracePeriodSeconds against
the longest long poll plus shutdown_grace_seconds. Run by .ci/deploy-check.
"""

import posixpath
import sys
import tomllib

import yaml

# A long poll waits at most this long (the polling-wait range of the API).
LONGEST_LONG_POLL_SECONDS = 30
# Time left for flushing storage and exiting after the drain.
FLUSH_MARGIN_SECONDS = 5


def server_default(name: str) -> int:
    """A default of the server's, read from the one place that defines it (src/config.rs)."""
    import pathlib
    import re

    source = pathlib.Path(__file__).resolve().parent.parent / "src" / "config.rs"
    match = re.search(rf"pub const {name}: \w+ = ([0-9_]+);", source.read_text())
    if match is None:
        raise SystemExit(f"{source}: no integer constant {name}")
    return int(match.group(1).replace("_", ""))


# The server's defaults, for keys that the file leaves out.
DEFAULT_SHUTDOWN_GRACE_SECONDS = server_default("DEFAULT_SHUTDOWN_GRACE_SECONDS")


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def main() -> int:
    toml_path, rendered_path = sys.argv[1], sys.argv[2]
    with open(toml_path, "rb") as f:
        config = tomllib.load(f)
    with open(rendered_path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]

    errors: list[str] = []

    def expect(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    by_kind: dict[str, list[dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    # The base runs a StatefulSet (embedded storage on a volume); the cluster overlay replaces it
    # with a Deployment of replicas sharing PostgreSQL.
    (workload,) = by_kind.get("StatefulSet", []) + by_kind.get("Deployment", [])
    pod = workload["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    embedded = "postgres_url" not in config and not any(
        e.get("name") == "SPOOL_POSTGRES_URL" for e in container.get("env", [])
    )

    for key in ("listen", "metrics_listen") + (("data_dir",) if embedded else ()):
        expect(key in config, f"{toml_path}: set {key} (the manifests depend on it)")
    if errors:
        return report(errors)
    grpc_port = port_of(config["listen"])
    metrics_port = port_of(config["metrics_listen"])
    expect(
        config["listen"].startswith("0.0.0.0:") or config["listen"].startswith("[::]:"),
        f"listen = {config['listen']!r} must accept other hosts (0.0.0.0 or [::])",
    )

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expect(ports.get("grpc") == grpc_port, f"containerPort grpc {ports.get('grpc')} != listen port {grpc_port}")
    expect(
        ports.get("metrics") == metrics_port,
        f"containerPort metrics {ports.get('metrics')} != metrics_listen port {metrics_port}",
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe_port = container.get(probe, {}).get("grpc", {}).get("port")
        expect(probe_port == grpc_port, f"{probe} gRPC port {probe_port} != listen port {grpc_port}")
    expect(
        container["readinessProbe"]["grpc"].get("service") == "spool.v1.QueueService",
        "readinessProbe must check spool.v1.QueueService (NOT_SERVING as soon as shutdown starts)",
    )
    expect(
        container["livenessProbe"]["grpc"].get("service", "") == "",
        'livenessProbe must check "" (SERVING until the process exits)',
    )

    annotations = pod["metadata"].get("annotations", {})
    expect(
        annotations.get("prometheus.io/port") == str(metrics_port),
        f"prometheus.io/port {annotations.get('prometheus.io/port')} != metrics_listen port {metrics_port}",
    )

    for service in by_kind["Service"]:
        for p in service["spec"]["ports"]:
            want = {"grpc": grpc_port, "metrics": metrics_port}.get(p["name"])
            expect(
                want is not None and p["port"] == want,
                f"Service {service['metadata']['name']} port {p['name']}={p['port']} != {want}",
            )

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    if embedded:
        expect(
            mounts.get("data") == config["data_dir"],
            f"volume data is mounted at {mounts.get('data')}, data_dir is {config['data_dir']}",
        )
    else:
        env = {e["name"]: e for e in container.get("env", [])}
        expect(
            "SPOOL_ADVERTISE_ADDRESS" in env
            and env["SPOOL_ADVERTISE_ADDRESS"].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            == "status.podIP",
            "a replica must advertise its pod IP (SPOOL_ADVERTISE_ADDRESS from status.podIP)",
        )
        expect(
            "secretKeyRef" in env.get("SPOOL_POSTGRES_URL", {}).get("valueFrom", {}),
            "the PostgreSQL URL must come from a Secret (SPOOL_POSTGRES_URL, secretKeyRef)",
        )

    args = container.get("args", [])
    expect(args[:1] == ["serve"] and "--config" in args, f"args {args} must be: serve --config PATH")
    if "--config" in args and args.index("--config") + 1 < len(args):
        config_path = args[args.index("--config") + 1]
        expect(
            mounts.get("config") == posixpath.dirname(config_path),
            f"the ConfigMap is mounted at {mounts.get('config')}, --config is {config_path}",
        )
        config_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
        (configmap,) = [
            c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == config_volume["configMap"]["name"]
        ]
        expect(
            posixpath.basename(config_path) in configmap["data"],
            f"ConfigMap {configmap['metadata']['name']} has no key {posixpath.basename(config_path)}",
        )

    # Protected by default: the server refuses to listen on 0.0.0.0 without an auth file, and
    # the file must be a Secret mounted as a directory (a subPath mount is never refreshed, so
    # principals could not change without a restart).
    expect("auth_file" in config, f"{toml_path}: set auth_file (the server needs it on 0.0.0.0)")
    if "auth_file" in config:
        auth_dir = posixpath.dirname(config["auth_file"])
        auth_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == auth_dir]
        expect(len(auth_mounts) == 1, f"nothing is mounted at {auth_dir}, auth_file's directory")
        for mount in auth_mounts:
            expect("subPath" not in mount, f"the auth file's mount at {auth_dir} must not use subPath")
            volume = next((v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]), {})
            secret_name = volume.get("secret", {}).get("secretName")
            secrets = [s for s in by_kind.get("Secret", []) if s["metadata"]["name"] == secret_name]
            expect(
                len(secrets) == 1,
                f"the volume {mount['name']} at {auth_dir} must be a Secret of the base ({secret_name})",
            )
            for secret in secrets:
                expect(
                    posixpath.basename(config["auth_file"]) in secret.get("data", {}),
                    f"Secret {secret_name} has no key {posixpath.basename(config['auth_file'])}",
                )

    grace = config.get("shutdown_grace_seconds", DEFAULT_SHUTDOWN_GRACE_SECONDS)
    needed = LONGEST_LONG_POLL_SECONDS + grace + FLUSH_MARGIN_SECONDS
    termination = pod["spec"].get("terminationGracePeriodSeconds", 30)
    expect(
        termination >= needed,
        f"terminationGracePeriodSeconds {termination} < {needed} "
        f"(long poll {LONGEST_LONG_POLL_SECONDS} s + shutdown_grace_seconds {grace} s + {FLUSH_MARGIN_SECONDS} s)",
    )

    if errors:
        return report(errors)
    print(f"deploy-check: manifests agree with {toml_path}")
    return 0


def report(errors: list[str]) -> int:
    for e in errors:
        print(f"deploy-check: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
