"""ConsortiumBackup resources: on-demand backups of a Consortium's ledger (``request``).

The Consortium's pass drives them (``consortium/backups.py``: it knows the primary and reads its
``GET /node/backup`` anyway); ``handlers`` only makes that pass due, and fails a request whose
Consortium does not exist (no pass would ever see it).
"""
