"""pixelvla_model: the PixelVLA network, its configs, checkpoint I/O and inference runtimes (no ROS)."""
