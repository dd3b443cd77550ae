"""Stage 1 on simulator episodes with ground truth: closure frame, geometry-only region proposal."""
from __future__ import annotations

import numpy as np

from pixelvla_training.labeling.proposal import find_closure, geometry_box, mask_box, propose_region
from pixelvla_training.labeling.sources import SimSource


def test_closure_frame_is_exact_from_commands_and_from_state(sim_dataset):
    root, truth = sim_dataset
    source = SimSource(root)
    for key in source.keys():
        ep = source.load(key)
        assert find_closure(ep.gripper_actions) == truth[key], key
        assert find_closure(gripper_state=ep.gripper_state) == truth[key], key


def test_no_closure_and_blips():
    assert find_closure(np.ones(10)) is None
    assert find_closure(np.zeros(10)) is None  # closed from the start: never closes
    assert find_closure(gripper_state=np.full(10, 0.9)) is None
    blip = np.array([1, 1, 0, 1, 1, 0, 0, 0], float)
    assert find_closure(blip) == 2 and find_closure(blip, min_closed=2) == 5


def test_geometry_proposal_contains_the_target_in_95_percent_of_episodes(sim_dataset):
    root, truth = sim_dataset
    source = SimSource(root)
    contained, areas = [], []
    for key in source.keys():
        ep = source.load(key)
        c = truth[key]
        prop = propose_region(ep.images[c], c, camera=ep.camera, tcp_pose=ep.tcp_poses[c],
                              finger=float(ep.finger_positions[c]))  # no segmenter, no detector: geometry only
        assert prop is not None and prop.method == "geometry"
        target = mask_box(ep.extra["target_masks"][c])
        assert target is not None, key
        x0, y0, x1, y1 = prop.box
        contained.append(x0 <= target[0] and y0 <= target[1] and x1 >= target[2] and y1 >= target[3])
        areas.append((x1 - x0) * (y1 - y0) / ep.images[c].shape[0] / ep.images[c].shape[1])
    rate = float(np.mean(contained))
    print(f"proposal contains the whole target in {rate:.1%} of {len(contained)} episodes; "
          f"mean proposal area {np.mean(areas):.1%} of the image")
    assert rate >= 0.95
    assert np.mean(areas) < 0.25  # a proposal, not the whole image


def test_projected_tcp_lies_on_the_grasped_object(sim_dataset):
    root, truth = sim_dataset
    source = SimSource(root)
    ep = source.load(source.keys()[0])
    c = truth[source.keys()[0]]
    box = geometry_box(ep.camera, ep.tcp_poses[c], float(ep.finger_positions[c]), 0.0)
    target = mask_box(ep.extra["target_masks"][c])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert target[0] - 3 <= cx <= target[2] + 3 and target[1] - 3 <= cy <= target[3] + 3
