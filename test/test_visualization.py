"""Predicted end-effector path and overlay drawing."""
import numpy as np

from pixelvla_training.robots import wx250s
from pixelvla_training.visualization import draw_box, draw_points, draw_polyline, predicted_tcp_path, tint_mask


def test_path_accumulates_the_deltas_from_the_current_tcp():
    q = wx250s.HOME_Q
    actions = np.zeros((3, 7))
    actions[:, 0] = 0.01
    actions[1, 2] = -0.02
    path = predicted_tcp_path(q, actions)
    start, _ = wx250s.fk(q)
    assert path.shape == (4, 3)
    assert np.allclose(path[0], start)
    assert np.allclose(path[-1] - start, [0.03, 0.0, -0.02])


def test_drawing_stays_inside_the_image_and_marks_pixels():
    image = np.zeros((20, 30, 3), np.uint8)
    draw_polyline(image, [(0.5, 0.5), (29.5, 19.5), (100.0, 100.0)], color=(255, 0, 0))
    assert tuple(image[0, 0]) == (255, 0, 0) and tuple(image[19, 29]) == (255, 0, 0)
    draw_points(image, [(15.5, 2.5), (np.nan, 1.0)], color=(0, 255, 0), radius=1)
    assert tuple(image[2, 15]) == (0, 255, 0) and tuple(image[2, 17]) != (0, 255, 0)
    draw_box(image, 5.0, 5.0, 10.0, 12.0, color=(0, 0, 255))
    assert tuple(image[5, 7]) == (0, 0, 255) and tuple(image[8, 7]) != (0, 0, 255)
    mask = np.zeros((20, 30), bool)
    mask[10:, :] = True
    tinted = tint_mask(np.full((20, 30, 3), 100, np.uint8), mask, color=(200, 200, 200), alpha=0.5)
    assert tuple(tinted[15, 3]) == (150, 150, 150) and tuple(tinted[5, 3]) == (100, 100, 100)
