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


def test_a_pixel_placed_on_a_plane_projects_back_onto_itself_at_any_image_size():
    from pixelvla_robots.rotations import rpy_to_matrix

    down = rpy_to_matrix(np.pi - 0.5, 0.0, -np.pi / 2)  # tilted down at the table, as the scene camera
    camera = CameraModel("c", 224, 224, 200.0, 200.0, 111.5, 111.5, np.array([0.1, 0.0, 0.6]), down)
    point = camera.point_at_height(150.0, 90.0, 0.018)
    assert abs(point[2] - 0.018) < 1e-12
    np.testing.assert_allclose(camera.project(point[None])[0][0], [150.0, 90.0], atol=1e-9)
    half = camera.resized(112, 112)  # the same view: a pixel's corner-origin coordinates halve
    np.testing.assert_allclose(image_xy(half.project(point[None])[0][0]), image_xy((150.0, 90.0)) / 2, atol=1e-9)
    np.testing.assert_allclose(half.point_at_height(*pixel_uv(image_xy((150.0, 90.0)) / 2), 0.018), point, atol=1e-9)
    assert np.isnan(camera.point_at_height(111.5, 111.5, 0.7)).all()  # the plane lies behind the camera
