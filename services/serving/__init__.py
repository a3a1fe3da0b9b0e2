"""Serving replicas: canary routing, shadow scoring, flags, event publishing, the ASGI app."""
