"""Kubernetes: the one client module (``k8s``) and the pure manifest builders (``builders``).

``k8s`` is the only module of the operator that imports the ``kubernetes`` package
(import-linter enforces it); builders turn a parsed spec into whole manifest dicts that
``k8s`` applies server-side with one field manager.
"""
