"""Datasets in LeRobot format: reading, writing, statistics."""
