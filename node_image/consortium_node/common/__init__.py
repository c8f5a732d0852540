"""Small pure helpers shared by every layer: canonical JSON, bounded JSON
decoding of untrusted bytes, RFC 3339 times, durations."""
