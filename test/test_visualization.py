"""Predicted end-effector path and overlay drawing."""
import tracemalloc

import numpy as np

from pixelvla_robots import wx250s
from pixelvla_training.visualization import clip_segment, draw_box, draw_points, draw_polyline, predicted_tcp_path, tint_mask


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


def peak_bytes(draw) -> int:
    """Peak memory numpy and Python allocate while `draw()` runs."""
    tracemalloc.start()
    try:
        draw()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_far_off_geometry_is_clipped_to_the_image_before_drawing():
    h, w = 48, 64
    far = np.zeros((h, w, 3), np.uint8)
    # a LINE prompt from (0, 5) to (1e7, 5): used to rasterise 1e7 samples (~0.4 GB, ~0.4 s per frame)
    assert peak_bytes(lambda: draw_polyline(far, [(0.0, 5.0), (1e7, 5.0)], color=(255, 0, 0))) < 200_000
    near = np.zeros((h, w, 3), np.uint8)
    draw_polyline(near, [(0.0, 5.0), (w + 1.0, 5.0)], color=(255, 0, 0))
    np.testing.assert_array_equal(far, near)
    assert (far[5] == (255, 0, 0)).all() and not far[4].any()  # the whole row, nothing else

    # a diagonal through the image from far outside both ways, a box bigger than the universe, far points
    image = np.zeros((h, w, 3), np.uint8)
    assert peak_bytes(lambda: (
        draw_polyline(image, [(-1e12, -1e12), (1e12, 1e12)], color=(0, 255, 0), thickness=3),
        draw_box(image, -1e300, -1e300, 1e300, 1e300, color=(0, 0, 255)),  # its edges are all outside
        draw_polyline(image, [(-1.7e308, 2.0), (1.7e308, 2.0)]),  # the length overflows: not drawn
        draw_points(image, [(1e7, 5.0), (-1e9, -1e9), (3.5, 1e30)]),
    )) < 200_000
    diagonal = np.zeros((h, w, 3), np.uint8)
    draw_polyline(diagonal, [(-2.0, -2.0), (w + 2.0, w + 2.0)], color=(0, 255, 0), thickness=3)
    np.testing.assert_array_equal(image, diagonal)


def test_clip_segment():
    assert clip_segment(-10.0, 5.0, 1e7, 5.0, 0.0, 0.0, 64.0, 48.0) == (0.0, 5.0, 64.0, 5.0)
    assert clip_segment(1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 64.0, 48.0) == (1.0, 2.0, 3.0, 4.0)  # inside: unchanged
    assert clip_segment(-5.0, -1.0, 100.0, -1.0, 0.0, 0.0, 64.0, 48.0) is None  # parallel, outside
    assert clip_segment(70.0, 0.0, 100.0, 60.0, 0.0, 0.0, 64.0, 48.0) is None
    assert clip_segment(0.0, np.nan, 5.0, 5.0, 0.0, 0.0, 64.0, 48.0) is None
    x0, y0, x1, y1 = clip_segment(-100.0, -50.0, 100.0, 50.0, 0.0, 0.0, 64.0, 48.0)
    assert (x0, y0) == (0.0, 0.0) and np.isclose(x1, 64.0) and np.isclose(y1, 32.0)
