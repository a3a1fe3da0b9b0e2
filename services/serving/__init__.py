"""Serving replicas: canary routing, flags, fault injection, event publishing, the ASGI app."""
