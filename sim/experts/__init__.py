"""Privileged-state scripted experts that generate demonstrations for the simulators in `sim/`."""
