"""Names and labels of everything the operator creates for a Consortium (one place, so the
builders, the reconciler, the finalizer and the tests agree)."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "consortium.tee.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "consortium-operator"
NODE_PORT = 8443

LABEL_CONSORTIUM = f"{GROUP}/consortium"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_CLIENT = f"{GROUP}/client"
LABEL_SCRAPE = f"{GROUP}/scrape"  # metrics scrapers (e.g. Prometheus pods) opt in with "true"
# On the operator's own pods (the chart sets it whatever nameOverride says): the NetworkPolicy
# admits the operator by it.
LABEL_OPERATOR = f"{GROUP}/operator"

# Paths inside a node pod (the ConfigMap template refers to them).
MOUNT_CONFIG = "/etc/consortium/config"
MOUNT_PLATFORM = "/etc/consortium/platform"
MOUNT_ENDORSEMENTS = "/etc/consortium/endorsements"  # spec.attestation.sevSnp.endorsementsRef
MOUNT_SERVICE = "/etc/consortium/service"
MOUNT_LIST = "/etc/consortium/trusted-nodes"
MOUNT_PEERS = "/etc/consortium/peers"
# Backups (spec.backup): the bucket credentials Secret (the user's, mounted optional: a missing
# Secret does not keep a node from starting; the node reports CredentialsMissing) with these two
# keys, and the CA bundle, a key of the config ConfigMap (public material only).
MOUNT_BACKUP_CREDENTIALS = "/etc/consortium/backup-credentials"
BACKUP_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
BACKUP_CA_KEY = "backup-ca.crt"
# On the pod template: the digest of the node configuration's backup section and CA bundle, so a
# change of spec.backup is a new StatefulSet revision, rolled one pod at a time (upgrade.py);
# the node reads its configuration once, at start.
ANNOTATION_BACKUP_CONFIG = f"{GROUP}/backup-config-sha256"
# Disaster recovery (spec.recovery, docs/recovery.md): the lost consortium's bucket credentials
# (the user's Secret, same keys as for backups), its previous service certificate and the
# bucket's CA bundle, both keys of the config ConfigMap (public).
MOUNT_RECOVERY_CREDENTIALS = "/etc/consortium/recovery-credentials"
RECOVERY_PREVIOUS_KEY = "previous-service-certificate.pem"
RECOVERY_CA_KEY = "recovery-ca.crt"
# The same for the node configuration's ledger section (signature and snapshot intervals from
# spec.ledger): a change reaches every node, one restarted pod at a time.
ANNOTATION_LEDGER_CONFIG = f"{GROUP}/ledger-config-sha256"
DATA_DIR = "/var/lib/consortium"
NODE_UID = 10001


@dataclass(frozen=True)
class Names:
    """Resource names of one Consortium."""

    consortium: str

    @property
    def statefulset(self) -> str:
        return self.consortium

    @property
    def service(self) -> str:
        return f"{self.consortium}-nodes"

    @property
    def platform_secret(self) -> str:
        return f"{self.consortium}-platform-root"

    @property
    def operator_secret(self) -> str:
        return f"{self.consortium}-operator-identity"

    @property
    def config(self) -> str:
        return f"{self.consortium}-config"

    @property
    def trusted_nodes(self) -> str:
        return f"{self.consortium}-trusted-nodes"

    @property
    def service_identity(self) -> str:
        return f"{self.consortium}-service-identity"

    @property
    def peers(self) -> str:
        return f"{self.consortium}-peers"

    @property
    def pdb(self) -> str:
        return self.consortium

    @property
    def network_policy(self) -> str:
        return f"{self.consortium}-nodes"

    def pod(self, ordinal: int) -> str:
        return f"{self.consortium}-{ordinal}"

    def pvc(self, ordinal: int) -> str:
        return f"ledger-{self.consortium}-{ordinal}"

    def pod_fqdn(self, pod: str, namespace: str, domain: str) -> str:
        """A pod's stable DNS name through the headless Service (its address, its TLS name)."""
        return f"{pod}.{self.service}.{namespace}.svc.{domain}"

    def claim_ordinal(self, claim: str) -> int | None:
        """The ordinal of a ledger PVC (``ledger-<consortium>-<ordinal>``), if it is one."""
        prefix = f"ledger-{self.consortium}-"
        rest = claim[len(prefix) :] if claim.startswith(prefix) else ""
        return int(rest) if rest.isdigit() else None

    def ordinal_of(self, pod_name: str) -> int | None:
        prefix = f"{self.consortium}-"
        rest = pod_name[len(prefix) :] if pod_name.startswith(prefix) else ""
        return int(rest) if rest.isdigit() else None

    def selector(self) -> dict[str, str]:
        """Labels that select this Consortium's node pods."""
        return {LABEL_CONSORTIUM: self.consortium, LABEL_COMPONENT: "ledger-node"}

    def labels(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "consortium",
            "app.kubernetes.io/instance": self.consortium,
            "app.kubernetes.io/managed-by": FIELD_MANAGER,
            LABEL_CONSORTIUM: self.consortium,
            LABEL_COMPONENT: component,
        }
