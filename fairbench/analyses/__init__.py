"""Analyses beyond the per-group metrics (docs/metrics.md): attribute leakage, prompt sensitivity, and more."""
