"""MNE-BIDS-Pipeline integration: plugin host, hooks, options, steps."""
