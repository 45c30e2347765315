"""Simulators behind one env protocol (`sim.base.Env`); `SIM=` picks one by name."""
