"""The simulator node on an overloaded machine: each control period starts `delay_s` late.

The sleep runs inside the step timer's callback, so the node's commands arrive during it and are
applied one step later unless the executor answers the published chunk at once.
"""
import sys
import time

from pixelvla_ros.node_base import run_node
from pixelvla_ros.nodes.sim_node import SimNode


class SlowSimNode(SimNode):
    def __init__(self) -> None:
        super().__init__()
        self.delay_s = self.declare("delay_s", 0.12, "sleep before each step (s)", minimum=0.0)

    def on_step(self) -> None:
        time.sleep(self.delay_s)
        super().on_step()


if __name__ == "__main__":
    sys.exit(run_node(SlowSimNode, None))
