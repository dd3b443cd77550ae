"""Episodes in the simulator for training (pixelvla_sim runs them): the dataset format and its writer/reader
(dataset.py, DATASET.md), the scripted expert's demonstrations, DAgger rounds driven by a policy (dagger.py) and
in-process closed-loop rollouts of a policy (rollout.py)."""
