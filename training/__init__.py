"""pixelvla_training: datasets, simulator, pixel labeling, CAT/PUE trainers, export and evaluation (no ROS)."""
