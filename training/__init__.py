"""pixelvla_training: datasets, simulator episodes for training (demonstrations, DAgger, rollouts), pixel labeling,
CAT/PUE trainers and reports (no ROS). The simulator itself is pixelvla_sim, the robot side pixelvla_robots."""
