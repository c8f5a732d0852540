"""Backups of the ledger to an S3-compatible object store, and their offline verification.

Why a package of its own: what is written to a bucket is a contract with auditors who hold only
the service certificate (``format``), the object-store client is an external dependency the rest
of the node must not import (``s3``), and verification (``verify``) is shared by the node (which
re-checks what it resumes from) and ``consortiumctl backup verify``. The server's shipping duty
(``server/backup.py``) is the only writer.
"""
