"""Real-robot deployment (Franka without ROS): robot protocol, safety layer, daemon. See issue 7."""
