"""The node process: configuration, composition of the layers into a Node, the HTTP API.

Handlers are thin: validate (``validation``) → call the ``Node`` → render JSON. All waiting for
durability happens in the group ``Committer`` so concurrent clients share one fsync.
"""
