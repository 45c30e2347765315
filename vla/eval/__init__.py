"""Policy evaluation in simulation."""
