"""The operator's vocabulary: resource names, spec parsing, condition reasons and metrics.

Everything here is pure and imported by every other layer; nothing here imports them.
"""
