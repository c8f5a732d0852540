"""``consortiumctl``: the member/user command line.

Everything that verifies (receipts, trusted-node lists, quotes) works offline from files and the
service certificate alone; commands that talk to a node trust only the service certificate.
"""
