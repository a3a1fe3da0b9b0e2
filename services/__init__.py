"""Serving replicas, control plane, metrics, dashboard and the `safeloop` CLI."""
