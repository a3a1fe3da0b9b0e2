"""The control plane: signed commands on a compacted, broadcast topic, and who applied them."""
