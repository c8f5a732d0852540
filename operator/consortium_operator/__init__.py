"""consortium_operator: kopf handlers reconciling Consortium and Member resources.

Layers (enforced by import-linter): ``handlers`` (kopf registration) → ``reconcile`` (one pass
over one Consortium: observe → build → apply → status) → ``builders``, ``status``,
``nodeclient``, ``verify``, ``spec`` (pure or node-facing) → ``names``, ``conditions``.
``k8s`` is the only module that talks to the Kubernetes API.

The operator is convenience, not a root of trust: every document it moves (quotes, the signed
trusted-node list, the service certificate) is verified by the nodes themselves; the operator
verifies them too only so that what it reports in status is true.
"""

__version__ = "0.1.0"
