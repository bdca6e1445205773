"""control: the control plane (controller, placement, metrics), reached through typed handles."""
