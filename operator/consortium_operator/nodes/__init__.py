"""Talking to node pods and checking what they hand over: the mutual-TLS client
(``client``), the operator's own verification of quotes and signed lists (``verify``) and the
operator side of each TEE platform (``platforms``).
"""
