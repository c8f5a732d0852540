"""Shipping the ledger to an S3-compatible store: the primary's backup duty.

Why the primary: it holds every committed entry, and one shipper at a time keeps the bucket
simple. A new primary picks up from the bucket itself (``_load_remote``): the newest manifest it
can verify with the service certificate, then any segments an earlier primary uploaded after
that manifest and did not get to list (adopted only if their bytes are what this node encodes
for the same range), so an interrupted backup resumes where it stopped and nothing is uploaded
twice. Formats and keys are ``backup.format``; the store client is ``backup.s3``.

A round: cut committed entries into segments that end at committed signature entries (at most
``SEGMENT_BYTES`` each unless one signature interval is bigger), upload them (append-only: an
existing key is never rewritten), upload committed snapshots whose evidence the backup covers,
then write one manifest listing everything, signed by the service key. Continuous mode starts a
round when the oldest committed entry not yet in a manifest is ``max_lag / 2`` old, or a
segment's worth is waiting; schedule mode at each cron time; either on request
(``POST /node/backup``). Entries are read on the event loop in slices (the in-memory log is not
thread-safe); encoding, hashing and the network run in worker threads.

Retention (``retention``): manifests older than it are deleted, except the newest three and the
first of each UTC day still inside it; snapshots no kept manifest lists are deleted. Ledger
segments are never deleted: they are the history, and every manifest lists them from index 1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from consortium_node.backup import format as fmt
from consortium_node.backup.s3 import S3Store, StoreError, StoreSettings
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import Ledger, TxId
from consortium_node.ledger.entries import peek_position
from consortium_node.ledger.errors import HistoryNotHeldError, LedgerError
from consortium_node.ledger.snapshot_store import StoredSnapshot
from consortium_node.server.backup_bucket import Remote, open_bucket, sweep
from consortium_node.server.config import BackupConfig
from consortium_node.server.metrics import NodeMetrics

log = logging.getLogger("consortium_node.backup")

SEGMENT_BYTES = 4 * 1024 * 1024
READ_SLICE = 2000  # entries read per step on the event loop
RETRY_MIN, RETRY_MAX = 2.0, 60.0
TICK = 1.0


class BackupShipper:
    """One task beside consensus (``run``); ``wake`` after commits, ``request`` on demand."""

    def __init__(
        self,
        config: BackupConfig,
        ledger: Ledger,
        *,
        consortium: str,
        service: Callable[[], ServiceIdentity],
        is_primary: Callable[[], bool],
        metrics: NodeMetrics,
    ) -> None:
        self.config = config
        self._ledger = ledger
        self._consortium = consortium
        self._service = service
        self._is_primary = is_primary
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._store: S3Store | None = None
        self._credentials: tuple[str, str] | None = None
        self._remote: Remote | None = None
        self._commits: collections.deque[tuple[int, float]] = collections.deque()
        self._requested: int | None = None
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN
        self._next_scheduled: float | None = None
        self.shipped_through = 0
        self.last_success: dict[str, Any] | None = None
        self.last_error: dict[str, str] | None = None
        metrics.backup_max_lag_seconds.set(self.promised_lag())

    # ------------------------------------------------------------------ triggers, status
    def promised_lag(self) -> float:
        """The lag this configuration promises: max_lag, or a schedule's period + 60 s."""
        if self.config.mode != "schedule":
            return self.config.max_lag.total_seconds()
        fire = _cron_next(self.config.schedule or "", time.time())
        return _cron_next(self.config.schedule or "", fire) - fire + 60.0

    def committed(self, index: int) -> None:
        """Note when ``index`` committed, for the lag. Marks are coarse: a mark younger than
        half a second absorbs the new index but keeps its time, so the age of the oldest
        entry not shipped is over-estimated by at most that, never under-estimated."""
        now = time.time()
        if self._commits and now - self._commits[-1][1] < 0.5:
            if index > self._commits[-1][0]:
                self._commits[-1] = (index, self._commits[-1][1])
        elif not self._commits or index > self._commits[-1][0]:
            self._commits.append((index, now))
        self._wake.set()

    def request(self) -> int:
        """Ask for a round now; returns the index the next manifest will cover at least."""
        target = self._ledger.signature_through(self._ledger.commit_index)
        self._requested = max(self._requested or 0, target)
        self._retry_at = 0.0
        self._wake.set()
        return target

    def lag(self) -> tuple[int, float]:
        """Committed entries not in a manifest, and the age of the oldest of them."""
        entries = max(0, self._ledger.commit_index - self.shipped_through)
        while self._commits and self._commits[0][0] <= self.shipped_through:
            self._commits.popleft()
        if entries == 0 or not self._commits:
            return entries, 0.0
        return entries, max(0.0, time.time() - self._commits[0][1])

    def status(self) -> dict[str, Any]:
        entries, seconds = self.lag() if self._is_primary() else (0, 0.0)
        return {
            "configured": True,
            "mode": self.config.mode,
            "shipper": self._is_primary(),
            "location": f"{self.config.endpoint}/{self.config.bucket}/{self.config.prefix}",
            "shipped_through": self.shipped_through,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "lag_entries": entries,
            "lag_seconds": round(seconds, 3),
            "max_lag_seconds": self.promised_lag(),
            "requested_through": self._requested,
        }

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK)
            self._wake.clear()
            if not self._is_primary():
                self._remote = None  # a later promotion re-reads the bucket
                self._update_gauges(primary=False)
                continue
            self._update_gauges(primary=True)
            if not self._due():
                continue
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                self._failed(exc.reason, exc.detail)
            except fmt.BackupError as exc:
                self._failed("UploadFailed", f"the bucket's backup does not verify: {exc}")
            except HistoryNotHeldError as exc:
                self._failed("HistoryNotHeld", str(exc))
            except Exception as exc:  # never stop consensus; reported, retried with backoff
                log.exception("backup round failed")
                self._failed("UploadFailed", f"{type(exc).__name__}: {exc}")

    def _due(self) -> bool:
        now = time.time()
        if now < self._retry_at:
            return False
        if self._requested is not None:
            return True
        if self.config.mode == "schedule":
            if self._next_scheduled is None:
                self._next_scheduled = _cron_next(self.config.schedule or "", now)
            return now >= self._next_scheduled
        entries, seconds = self.lag()
        return entries > 0 and (
            seconds >= self.config.max_lag.total_seconds() / 2 or entries >= READ_SLICE * 10
        )

    def _update_gauges(self, *, primary: bool) -> None:
        entries, seconds = self.lag() if primary else (0, 0.0)
        self._metrics.backup_lag_entries.set(entries)
        self._metrics.backup_lag_seconds.set(seconds)

    def _failed(self, reason: str, detail: str) -> None:
        changed = self.last_error is None or self.last_error["reason"] != reason
        self.last_error = {"reason": reason, "message": detail, "time": rfc3339(utcnow())}
        self._metrics.backup_failures.labels(reason).inc()
        (log.warning if changed else log.debug)(
            "backup to %s failed: %s: %s", self.config.bucket, reason, detail
        )
        self._retry_at = time.time() + self._retry_delay
        self._retry_delay = min(RETRY_MAX, self._retry_delay * 2)
        if reason in ("ObjectConflict", "BucketOwnedByAnotherConsortium"):
            self._remote = None

    # ------------------------------------------------------------------ one round
    async def round(self) -> None:
        """Ship what is committed and write a manifest (see the module docstring)."""
        store = await self._open_store()
        if self._remote is None:
            opened, self.shipped_through = await asyncio.to_thread(
                open_bucket, store, self._consortium, self._service()
            )
            self._remote = opened
        remote: Remote = self._remote
        target = self._ledger.signature_through(self._ledger.commit_index)
        before = (remote.end, len(remote.snapshots))
        while remote.end < target:
            await self._ship_segment(store, remote, target)
        await self._ship_snapshots(store, remote, target)
        changed = (remote.end, len(remote.snapshots)) != before
        if remote.chain and (
            changed or self.shipped_through < remote.end or remote.previous is None
        ):
            await self._write_manifest(store, remote)
        if self._requested is not None and self.shipped_through >= self._requested:
            self._requested = None
        if self.config.mode == "schedule":
            self._next_scheduled = _cron_next(self.config.schedule or "", time.time())
        if self.config.retention is not None and time.time() - remote.swept_at > 3600:
            await asyncio.to_thread(
                sweep, store, remote, self.config.retention, self._service().certificate
            )
        self._retry_delay = RETRY_MIN
        if self.last_error is not None:
            log.info("backup to %s works again", self.config.bucket)
        self.last_error = None

    async def _open_store(self) -> S3Store:
        settings = store_settings(self.config)
        credentials = (settings.access_key_id, settings.secret_access_key)
        if self._store is None or credentials != self._credentials:
            self._store = await asyncio.to_thread(S3Store, settings)
            self._credentials = credentials
            self._remote = None
        return self._store

    async def _read_segment(self, remote: Remote, start: int, target: int) -> list[bytes]:
        """Payloads from ``start`` to the signature entry the segment ends at (at most
        ``target``): an earlier shipper's unlisted range if there is one (its key is reused),
        else about ``SEGMENT_BYTES``, read in slices on the event loop."""
        adopted = remote.pending.get(start)
        if adopted is not None and adopted > target:
            adopted = None
        if adopted is not None and self._ledger.signature_through(adopted) != adopted:
            adopted = None
        payloads: list[bytes] = []
        size = 0
        end = adopted
        while end is None or start + len(payloads) <= end:
            next_index = start + len(payloads)
            limit = target if end is None else end
            count = min(READ_SLICE, limit - next_index + 1)
            batch = self._ledger.entries_from(next_index, count, 2**62)
            payloads += batch
            size += sum(map(len, batch))
            last = start + len(payloads) - 1
            if end is None and (size >= SEGMENT_BYTES or last >= target):
                end = self._ledger.signature_through(last)
                if end < start:  # no signature yet in what was read: read on to the next one
                    end = self._ledger.signature_after(last) or target
            await asyncio.sleep(0)
        return payloads[: end - start + 1]

    async def _ship_segment(self, store: S3Store, remote: Remote, target: int) -> None:
        start = remote.end + 1
        payloads = await self._read_segment(remote, start, target)
        end = start + len(payloads) - 1
        if start == 1:
            remote.first_txid = TxId(*peek_position(payloads[0]))
        key = fmt.segment_key(start, end)

        def upload() -> tuple[fmt.ObjectRecord, bool]:
            data = fmt.encode_segment(payloads)
            record = fmt.ObjectRecord.for_bytes(key, "ledger", start, end, data)
            return record, store.put_new(key, data)

        record, uploaded = await asyncio.to_thread(upload)
        remote.chain.append(record)
        remote.pending.pop(start, None)
        self._count(record, uploaded)

    def _count(self, record: fmt.ObjectRecord, uploaded: bool) -> None:
        if uploaded:
            self._metrics.backup_bytes.inc(record.size)
            self._metrics.backup_objects.labels(record.kind).inc()
        else:
            log.info("backup: %s was already uploaded with these bytes; resumed", record.key)

    async def _ship_snapshots(self, store: S3Store, remote: Remote, target: int) -> None:
        """Committed snapshots whose evidence entry the backup covers."""
        for stored in self._ledger.snapshots.list():
            if stored.index in remote.snapshots or stored.index > target or not stored.committed:
                continue
            try:
                evidence = TxId.parse(str(stored.receipt()["txid"]))
            except (KeyError, ValueError, LedgerError) as exc:
                log.warning("backup: snapshot %d has no readable receipt (%s)", stored.index, exc)
                continue
            if evidence.index > remote.end:
                continue  # the backup does not cover its evidence yet
            try:
                record, uploaded = await asyncio.to_thread(_upload_snapshot, store, stored)
            except FileNotFoundError:
                continue  # pruned meanwhile: a newer one is there
            remote.snapshots[stored.index] = record
            self._count(record, uploaded)

    async def _write_manifest(self, store: S3Store, remote: Remote) -> None:
        service = self._service()
        last = remote.end
        assert remote.first_txid is not None
        manifest = fmt.Manifest(
            consortium=self._consortium,
            service_certificate_sha256=service.certificate_sha256,
            created_at=rfc3339(utcnow()),
            first_txid=remote.first_txid,
            last_txid=TxId(self._ledger.term_at(last), last),
            objects=(*remote.chain, *(remote.snapshots[i] for i in sorted(remote.snapshots))),
            previous=remote.previous,
        )
        envelope = fmt.sign_manifest(manifest, service)
        key = fmt.manifest_key(last, envelope)
        await asyncio.to_thread(store.put_new, key, envelope, "application/cose")
        digest = hashlib.sha256(envelope).hexdigest()
        remote.previous = (key, digest)
        self.shipped_through = last
        total = sum(o.size for o in manifest.objects)
        self.last_success = {
            "time": manifest.created_at,
            "txid": str(manifest.last_txid),
            "manifest": key,
            "manifest_sha256": digest,
            "objects": len(manifest.objects),
            "bytes": total,
        }
        self._metrics.backup_objects.labels("manifest").inc()
        self._metrics.backup_bytes.inc(len(envelope))
        self._metrics.backup_last_success.set(time.time())
        self._metrics.backup_shipped_index.set(last)
        self._update_gauges(primary=True)
        log.info(
            "backup: manifest %s covers %s..%s (%d objects)",
            key,
            manifest.first_txid,
            manifest.last_txid,
            len(manifest.objects),
        )


def _upload_snapshot(store: S3Store, stored: StoredSnapshot) -> tuple[fmt.ObjectRecord, bool]:
    data = stored.path.read_bytes()
    key = fmt.snapshot_key(stored.index)
    record = fmt.ObjectRecord.for_bytes(key, "snapshot", stored.index, stored.index, data)
    return record, store.put_new(key, data)


def _cron_next(expression: str, after: float) -> float:
    from croniter import croniter  # noqa: PLC0415 - only a scheduled backup needs it

    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(expression, start).get_next(float))


def store_settings(config: BackupConfig) -> StoreSettings:
    """The S3 settings of a ``backup:`` (or ``recovery.source.bucket:``) section, with the
    credentials read from their files now (a rotated key is used without a restart);
    StoreError ``CredentialsMissing`` if they cannot be read."""
    try:
        credentials = (
            config.access_key_id_file.read_text().strip(),
            config.secret_access_key_file.read_text().strip(),
        )
    except OSError as exc:
        raise StoreError("CredentialsMissing", f"cannot read the credentials: {exc}") from exc
    if not all(credentials):
        raise StoreError("CredentialsMissing", "an access key file is empty")
    return StoreSettings(
        endpoint=config.endpoint,
        bucket=config.bucket,
        prefix=config.prefix,
        region=config.region,
        access_key_id=credentials[0],
        secret_access_key=credentials[1],
        ca_file=str(config.ca_file) if config.ca_file else None,
    )
