"""Identities: node, member and service keys, certificates, COSE_Sign1 and the trusted-node list.

Everything a verifier needs is derivable from public data plus the service certificate:
node_id and member_id are digests, node certificates chain to the service certificate, and the
trusted-node list is a COSE_Sign1 envelope any COSE library verifies (DESIGN sections 3 and 4).
"""
