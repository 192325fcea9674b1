"""Latency and accuracy measurement of compiled artifacts."""
