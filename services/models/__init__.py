"""Models that replicas serve: the plug-in Protocol, numpy demo models, the on-disk store."""
