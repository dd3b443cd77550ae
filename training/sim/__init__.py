"""MuJoCo WidowX 250 tabletop simulator (no ROS)."""
