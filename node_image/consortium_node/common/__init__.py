"""Small pure helpers shared by every layer: canonical JSON, RFC 3339 times, durations."""
