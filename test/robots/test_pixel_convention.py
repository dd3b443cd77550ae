"""One pixel convention: image coordinates have their origin at the top-left pixel's corner (VisualPrompt);
pixel indices and a CameraModel's (u, v) at that pixel's centre."""
import numpy as np

from pixelvla_robots.camera import CameraModel, image_xy, pixel_uv


def test_the_centre_of_a_pixel_and_back():
    assert image_xy((0, 0)).tolist() == [0.5, 0.5]
    assert image_xy((3, 7)).tolist() == [3.5, 7.5]
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(3)), -1)  # (3, 4, 2) pixel indices
    assert np.array_equal(pixel_uv(image_xy(grid)), grid)


def test_a_point_on_the_optical_axis_lands_in_the_middle_of_an_even_image():
    camera = CameraModel("c", 640, 480, 500.0, 500.0, 319.5, 239.5, np.zeros(3), np.eye(3))
    uv, depth = camera.project(np.array([[0.0, 0.0, 1.0]]))
    assert depth[0] == 1.0 and image_xy(uv[0]).tolist() == [320.0, 240.0]  # the image's centre, corner origin
