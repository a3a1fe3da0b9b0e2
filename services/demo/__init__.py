"""`safeloop demo`: the whole loop started locally, driven through a scripted story."""
