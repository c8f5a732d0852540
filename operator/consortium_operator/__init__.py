"""consortium_operator: kopf handlers reconciling Consortium, Member and Proposal resources.

Layers, one folder each (enforced by import-linter, every module must be in one): ``main`` →
``handlers`` (kopf registration only) → ``consortium`` (one reconcile pass: its steps, each a
module; ``reconcile.py`` only sequences them) → ``members`` | ``proposals`` | ``backups``
(Member reconciliation; governance intents, relay and mirror; ConsortiumBackup requests) →
``nodes`` (the node client, quote and
list verification) → ``kube`` (``k8s``, the only module that talks to the Kubernetes API;
pure manifest builders) → ``api`` (names, spec, conditions, metrics). Only ``handlers`` and
``main`` import kopf. See docs/ARCHITECTURE.md.

The operator is convenience, not a root of trust: every document it moves (quotes, the signed
trusted-node list, the service certificate) is verified by the nodes themselves; the operator
verifies them too only so that what it reports in status is true.
"""

__version__ = "0.1.0"
