"""Member resources: their validated view and their status from the ledger (``reconcile``)."""
