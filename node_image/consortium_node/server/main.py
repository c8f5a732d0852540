"""``consortium-node``: run a node, or print the values an operator needs to configure one.

    consortium-node run --config node.yaml      start (genesis or restart) and serve the API
    consortium-node kube [--config FILE]        the same, as a pod of the operator's StatefulSet
    consortium-node measure                     print this build's code measurement
                  [--insecure-sev-snp-emulator] (the SEV-SNP emulator's launch measurement)
    consortium-node host-data --consortium C --role genesis|join
    consortium-node platform-init --out DIR     create an emulated platform's endorsements

Exit codes: 0 ok, 1 the node failed (message on stderr), 2 usage or configuration error,
3 join refused, 75 restart it: a ledger entry was found damaged on disk (start-up repairs it)
or a snapshot was staged because no voter holds the entries this log lacks (start-up installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from consortium_node.attestation import host_data_for, measure_installed, platforms
from consortium_node.attestation.sev_snp.emulator import launch_measurement
from consortium_node.common.files import write_atomic
from consortium_node.ledger import StoredEntryDamagedError
from consortium_node.recovery.record import RECORD_KEY, T_RECOVERY
from consortium_node.replication.raft import RaftNode, RaftTiming
from consortium_node.server import hosts, runtime
from consortium_node.server.app import Services, build_app
from consortium_node.server.backup import BackupShipper
from consortium_node.server.config import MODES, ConfigError, NodeConfig, load_config
from consortium_node.server.errors import JoinRefusedError, NodeStartError
from consortium_node.server.governance import Governance
from consortium_node.server.kube import load_pod_config
from consortium_node.server.node import Node
from consortium_node.server.peers import PeerTransport
from consortium_node.server.primary import Primary
from consortium_node.server.recovery_api import Ceremony
from consortium_node.server.recovery_keeper import RecoveryKeeper
from consortium_node.server.refresh import keep_address_current
from consortium_node.server.scrub import scrub
from consortium_node.server.sealed import SealedStoreError
from consortium_node.server.service_state import OPEN
from consortium_node.server.snapshot_fetch import MAX_SNAPSHOT_BYTES
from consortium_node.server.snapshot_install import install_when_stranded
from consortium_node.server.snapshots import SnapshotKeeper
from consortium_node.server.starting import StartingServer
from consortium_node.server.tls import load_identity, peer_context, server_context
from consortium_node.server.tls_site import TLSSite
from consortium_node.server.watch import watch_list_file

log = logging.getLogger("consortium_node")


# Exit status when the restart must fix the ledger (Kubernetes restarts the container): a
# durable entry was found damaged on disk while running (the restart replays the ledger, sets
# the damage aside and gets the entries again from the consortium: ``Ledger.open(repair=
# True)``), or a snapshot was staged (``snapshot_install``). EX_TEMPFAIL.
EXIT_LEDGER_DAMAGED = 75
SHUTDOWN_WAIT = 5.0  # seconds a stop waits for requests in flight


class _StopForRestart:
    """Sets ``stop`` with the first reason the node must restart to fix its ledger: a read
    found a durable entry damaged on disk (``damaged``), or a snapshot is staged
    (``installing``)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop, self.loop = stop, asyncio.get_running_loop()
        self.reason: str | None = None

    def damaged(self, exc: StoredEntryDamagedError) -> None:
        if self.reason is None:
            log.critical("ledger: %s; stopping so that the restart repairs it from peers", exc)
            self._stop(f"{exc}; stopped: its restart repairs the ledger from the consortium")

    def installing(self, why: str) -> None:
        if self.reason is None:
            log.critical("ledger: %s", why)
            self._stop(why)

    def recovered(self, why: str) -> None:
        """A recovery node sealed the secrets its members' shares opened (``recovery_api``)."""
        if self.reason is None:
            log.warning("%s", why)
            self._stop(why)

    def _stop(self, reason: str) -> None:
        self.reason = reason
        self.loop.call_soon_threadsafe(self.stop.set)


async def fetch_snapshot(
    node: Node, raft: RaftNode, transport: PeerTransport, index: int
) -> bytes | None:
    """Committed snapshot ``index`` from the primary, else from any voter that serves it (the
    caller checks the bytes against the committed evidence); None if none does."""
    voters = node.membership.configuration().voters.values()
    sources = [raft.leader_address, *voters]
    for address in dict.fromkeys(a for a in sources if a and a != node.config.address):
        try:
            data = await transport.get_snapshot(address, index, MAX_SNAPSHOT_BYTES)
        except OSError as exc:
            log.info("snapshot %d not fetched from %s: %s", index, address, exc)
            continue
        if data is not None:
            return data
    return None


@dataclass(frozen=True)
class _Keepers:
    """The duties that follow commits: snapshots, the recovery record (both written by the
    primary), and backups (shipped by the primary)."""

    snapshots: SnapshotKeeper
    recovery: RecoveryKeeper
    backup: BackupShipper | None

    @classmethod
    def start(cls, node: Node, raft: RaftNode, transport: PeerTransport) -> _Keepers:
        config, metrics = node.config, node.metrics

        def primary() -> bool:
            return raft.role == "leader"

        def keeps_record() -> bool:  # a recovering service keeps the record its shares open
            return primary() and node.service_phase() == OPEN

        snapshots = SnapshotKeeper(
            node.ledger,
            is_primary=primary,
            submit=raft.submit,
            on_written=metrics.observe_snapshot,
            on_committed=metrics.snapshot_committed_index.set,
            fetch=lambda index: fetch_snapshot(node, raft, transport, index),
            on_fetched=metrics.observe_fetched_snapshot,
        )
        recovery = RecoveryKeeper(
            consortium=config.consortium,
            members=node.members,
            constitution=node.constitution,
            current=lambda: node.public_value(T_RECOVERY, RECORD_KEY),
            secrets=node.ledger.secrets.by_version,
            is_primary=keeps_record,
            submit=raft.submit,
        )
        backup = None
        if config.backup is not None:
            backup = BackupShipper(
                config.backup,
                node.ledger,
                consortium=config.consortium,
                service=lambda: node.service,
                is_primary=primary,
                metrics=metrics,
            )
        return cls(snapshots, recovery, backup)

    def committed(self, index: int) -> None:
        self.snapshots.wake()
        self.recovery.wake()
        if self.backup is not None:
            self.backup.committed(index)

    def tasks(self) -> list[asyncio.Task[None]]:
        runs = [("snapshots", self.snapshots.run()), ("recovery-record", self.recovery.run())]
        if self.backup is not None:
            runs.append(("backup", self.backup.run()))
        return [asyncio.create_task(coro, name=name) for name, coro in runs]


async def serve(node: Node, host: str, port: int) -> str | None:
    """Run consensus, the primary's duties and the API over TLS until SIGTERM/SIGINT, or until
    the ledger needs a restart to be fixed (why returned: the caller exits for it)."""
    stop = asyncio.Event()
    restart = _StopForRestart(stop)
    node.ledger.on_read_damage(restart.damaged)
    config = node.config
    server_tls = server_context(
        node.node_key, node.certificate.current, [node.service.certificate_pem]
    )
    # Members' certificates are trust anchors for client authentication; a joiner learns them
    # as its ledger catches up, so they are added as they appear.
    node.on_new_members = lambda pems: server_tls.load_verify_locations(cadata="\n".join(pems))
    node.announce_members()
    peer_tls = peer_context(node.service.certificate_pem, node.node_key, node.certificate.current)
    transport = PeerTransport(peer_tls, timeout=max(2.0, config.raft.election_timeout))
    metrics = node.metrics

    def role_changed(role: str) -> None:
        node.role = {"leader": "primary", "follower": "backup"}.get(role, role)
        metrics.set_role(node.role)
        node.ledger.own_snapshots(role == "leader")  # a backup fetches the primary's

    def committed(index: int) -> None:
        node.on_commit(index)
        keepers.committed(index)

    raft = RaftNode(
        node_id=node.node_id,
        address=config.address,
        ledger=node.ledger,
        state=node.raft_state,
        transport=transport,
        configuration=node.membership.configuration,
        signer=lambda: node.certificate.signer,
        timing=RaftTiming(
            election_timeout=config.raft.election_timeout,
            heartbeat_interval=config.raft.heartbeat_interval,
            rpc_timeout=max(1.0, config.raft.election_timeout),
            commit_timeout=config.raft.commit_timeout,
        ),
        on_commit=committed,
        on_role_change=role_changed,
        on_signature=metrics.signatures.inc,
        on_commit_latency=metrics.commit_latency.observe,
        on_log_grown=node.note_repair,
    )
    role_changed("follower")
    primary = Primary(node, raft, transport)
    keepers = _Keepers.start(node, raft, transport)
    backup = keepers.backup

    def reload_certificates() -> None:
        load_identity(server_tls, node.node_key, node.certificate.current)
        load_identity(peer_tls, node.node_key, node.certificate.current)
        transport.reset()

    node.certificate.on_change = reload_certificates
    governance = Governance(node, raft, primary)
    ceremony = Ceremony(governance, restart.recovered)
    app = build_app(Services(node, raft, primary, transport, governance, ceremony, backup))
    # A stop waits at most SHUTDOWN_WAIT for requests in flight (aiohttp's default is 60 s; a
    # pod is killed 10 s after SIGTERM anyway): a client that never sends its body must not
    # hold the node up. Nothing is acknowledged that was not committed, so none is lost.
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_WAIT
    )
    await runner.setup()
    site = TLSSite(runner, host, port, server_tls)  # refusals send their alert and are logged
    await site.start()
    await raft.start()
    tasks = [
        asyncio.create_task(primary.run_rotation(), name="rotation"),
        *keepers.tasks(),
        asyncio.create_task(scrub(node.ledger), name="scrub"),
        asyncio.create_task(install_when_stranded(node, raft, restart.installing), name="install"),
        asyncio.create_task(keep_address_current(node, raft, primary, transport), name="refresh"),
    ]
    if config.trusted_list_path is not None:
        tasks.append(asyncio.create_task(watch_list_file(node, config.trusted_list_path)))
    _warn_if_emulated(config)
    log.info("node %s (%s) listening on https://%s:%d", config.name, node.node_id[:16], host, port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        restart.loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    for task in tasks:
        task.cancel()
    await raft.stop()
    await runner.cleanup()
    await transport.close()
    node.close()
    return restart.reason


def _fail(message: str, code: int) -> int:
    """Report a start-up failure on stderr and, in a pod, as its termination message.

    Kubernetes shows the termination message in the pod's status, which is where the operator
    reads why a node could not start (e.g. its measurement is not allowed).
    """
    print(f"consortium-node: {message}", file=sys.stderr)
    termination_log = Path(os.environ.get("TERMINATION_LOG", "/dev/termination-log"))
    if termination_log.exists():  # Kubernetes creates it in every container
        with contextlib.suppress(OSError):
            termination_log.write_text(message[:4000])
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "kube":
            config = load_pod_config(Path(args.config), os.environ)
        else:
            config = load_config(Path(args.config))
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    if config.peer_hosts_file is not None:
        hosts.install(config.peer_hosts_file)
    try:
        with StartingServer(config.listen_host, config.listen_port):  # probes answered meanwhile
            node = Node.open(config)
    except JoinRefusedError as exc:
        return _fail(str(exc), 3)
    except (NodeStartError, SealedStoreError, ConfigError) as exc:
        return _fail(f"cannot start: {exc}", 1)
    except Exception as exc:
        log.exception("cannot start")
        return _fail(f"cannot start: {type(exc).__name__}: {exc}", 1)
    runtime.settle_memory()
    profile = os.environ.get("CONSORTIUM_NODE_PROFILE")
    if profile:  # a developer's switch: where does the node's time go (see bench/run.py)
        import cProfile  # noqa: PLC0415

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            restart = runtime.run(serve(node, config.listen_host, config.listen_port))
        finally:
            profiler.disable()
            profiler.dump_stats(profile)
    else:
        restart = runtime.run(serve(node, config.listen_host, config.listen_port))
    return 0 if restart is None else _fail(restart, EXIT_LEDGER_DAMAGED)


def _warn_if_emulated(config: NodeConfig) -> None:
    """An emulated platform, or a hardware platform's emulator root, says so at every start."""
    platform = platforms.by_name(config.platform.name)
    emulated = [e.file for e in platform.endorsements if e.emulator]
    if platform.insecure or any(f in config.platform.endorsements for f in emulated):
        log.warning(
            "INSECURE: platform %s is emulated (its root is in a file: whoever reads it forges "
            "any node); do not use in production",
            config.platform.name,
        )


def _platform_init(args: argparse.Namespace) -> int:
    """Write a fresh set of an emulated platform's endorsements as ``platform-<file>``
    (private files 0600, public 0644); a hardware platform's come from its vendor."""
    platform = platforms.by_name(args.platform)
    if platform.provision is None:
        print(
            f"consortium-node: platform {platform.name}'s endorsements come from its vendor; "
            "they cannot be created here",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    paths = {e.file: out / f"platform-{e.file}" for e in platform.endorsements}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not args.force:
        print(
            f"consortium-node: {', '.join(existing)} exists; use --force to replace it",
            file=sys.stderr,
        )
        return 1
    material = platform.provision()
    for e in platform.endorsements:
        write_atomic(paths[e.file], material[e.file], mode=0o600 if e.private else 0o644)
    written = ", ".join(str(path) for path in paths.values())
    print(f"{'INSECURE ' if platform.insecure else ''}platform {platform.name}: wrote {written}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consortium-node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the node and serve its API")
    run.add_argument("--config", required=True, help="node configuration YAML")
    kube = sub.add_parser("kube", help="start as a pod of the operator's StatefulSet")
    kube.add_argument(
        "--config",
        default="/etc/consortium/config/node.yaml",
        help="the operator's node configuration template (pod identity comes from env)",
    )
    measure = sub.add_parser("measure", help="print the code measurement of this installed node")
    measure.add_argument(
        "--insecure-sev-snp-emulator",
        action="store_true",
        help="print the launch measurement the INSECURE SEV-SNP emulator reports for it (the "
        "value spec.attestation.measurements lists with device insecure-emulator)",
    )
    hd = sub.add_parser("host-data", help="print host_data for a launch configuration")
    hd.add_argument("--consortium", required=True)
    hd.add_argument("--role", required=True, choices=MODES)
    init = sub.add_parser("platform-init", help="create an emulated platform's endorsements")
    init.add_argument("--out", required=True, help="directory for platform-<file> files")
    init.add_argument("--platform", default=platforms.DEFAULT, choices=platforms.names())
    init.add_argument("--force", action="store_true", help="replace an existing root")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in ("run", "kube"):
        return _run(args)
    if args.command == "measure":
        package = measure_installed()
        print(launch_measurement(package).hex() if args.insecure_sev_snp_emulator else package)
        return 0
    if args.command == "host-data":
        print(host_data_for(args.consortium, args.role))
        return 0
    return _platform_init(args)


if __name__ == "__main__":
    sys.exit(main())
