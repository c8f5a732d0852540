"""Start a node as a pod of the operator's StatefulSet: one config for every pod, plus its env.

The operator renders one YAML configuration per Consortium (members, constitution, attestation
policy, mounted paths) into a ConfigMap. What differs between pods comes from the downward API:

* ``POD_NAME`` (``<consortium>-<ordinal>``) → node ``name`` and chip id;
* ``POD_NAMESPACE``, ``CONSORTIUM_SERVICE``, ``CLUSTER_DOMAIN`` → the stable DNS ``address``
  (``<pod>.<service>.<ns>.svc.<domain>:<port>``) recorded in the trusted-node list;
* ``POD_IP`` → an extra certificate name, and the peers file maps the DNS name to it where
  the cluster has no DNS.

The mode follows from what is mounted, never from the operator's say-so alone: ordinal 0
starts as **genesis** (or **recover**, when the template has a ``recovery`` section: a
Consortium with ``spec.recovery``) only while no service certificate has been published; every other
case (a later ordinal, or pod 0 replaced after bootstrap) **joins**. A node whose data
directory already holds a sealed identity restarts regardless (``Node.open``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consortium_node.server.config import ConfigError, NodeConfig, parse_config, read_yaml

ORDINAL_RE = re.compile(r"^(?P<set>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>\d+)$")
REQUIRED_ENV = ("POD_NAME", "POD_NAMESPACE", "POD_IP", "CONSORTIUM_SERVICE")


def pod_settings(base: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The node configuration (as parsed YAML) of the pod described by ``env``.

    ``base`` is the operator's template; it carries a ``kubernetes`` section with
    ``service_certificate`` (the mounted published certificate) that this function consumes.
    Raises ``ConfigError`` naming the variable or field at fault.
    """
    for name in REQUIRED_ENV:
        if not env.get(name):
            raise ConfigError(f"environment: {name} is required (set by the pod's downward API)")
    match = ORDINAL_RE.match(env["POD_NAME"])
    if match is None:
        raise ConfigError(f"environment: POD_NAME {env['POD_NAME']!r} is not <set>-<ordinal>")
    settings = copy.deepcopy(dict(base))
    for section in ("listen", "platform"):
        if settings.get(section) is None:
            settings[section] = {}
        elif not isinstance(settings[section], dict):
            raise ConfigError(f"{section}: expected a mapping")
    kube = settings.pop("kubernetes", None)
    if not isinstance(kube, dict) or not isinstance(kube.get("service_certificate"), str):
        raise ConfigError("kubernetes.service_certificate: required (path of the mounted file)")
    port = settings.get("listen", {}).get("port", 8443)
    domain = env.get("CLUSTER_DOMAIN") or "cluster.local"
    pod, ns, svc = env["POD_NAME"], env["POD_NAMESPACE"], env["CONSORTIUM_SERVICE"]
    fqdn = f"{pod}.{svc}.{ns}.svc.{domain}"
    settings["name"] = pod
    settings["address"] = f"{fqdn}:{port}"
    # This pod's names, its IP at join time, and the headless Service's names, which every
    # node carries: a client (or a Prometheus scrape with one tls server_name) can address any
    # node through the Service, or by an IP that changed since, and still verify the name.
    settings["subject_alt_names"] = [
        fqdn,
        f"{pod}.{svc}.{ns}.svc",
        f"{pod}.{svc}",
        env["POD_IP"],
        f"{svc}.{ns}.svc.{domain}",
        f"{svc}.{ns}.svc",
    ]
    settings.setdefault("platform", {})["chip_id"] = pod
    published = Path(kube["service_certificate"])
    bootstrapped = published.is_file() and published.stat().st_size > 0
    if int(match.group("ordinal")) == 0 and not bootstrapped:
        # a Consortium with spec.recovery starts by recovering a lost one (``recover``)
        settings["mode"] = "recover" if settings.get("recovery") is not None else "genesis"
        settings.pop("join", None)
    else:
        settings["mode"] = "join"
        settings.pop("recovery", None)  # used only by the first start (``recover``)
        settings.setdefault("join", {})["service_certificate"] = str(published)
    return settings


def load_pod_config(path: Path, env: Mapping[str, str]) -> NodeConfig:
    """Read the operator's template at ``path`` and parse the pod's configuration."""
    base = read_yaml(path)
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: expected a mapping")
    return parse_config(pod_settings(base, env), path.parent)
