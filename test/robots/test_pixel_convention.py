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


def test_the_click_map_places_a_click_where_its_ray_meets_the_plane_minus_the_tcp():
    from pixelvla_robots.camera import plane_click_map
    from pixelvla_robots.rotations import rpy_to_matrix

    down = rpy_to_matrix(np.pi - 0.5, 0.0, -np.pi / 2)
    camera = CameraModel("c", 640, 480, 520.0, 520.0, 319.5, 239.5, np.array([0.1, 0.0, 0.6]), down)
    tcp = np.array([0.3, -0.05, 0.2])
    for size in [(640, 480), (224, 224)]:  # normalised clicks: the same map at any size the image is resized to
        m = plane_click_map(camera.resized(*size), 0.018, tcp)
        for x, y in [(0.5, 0.5), (0.1, 0.9), (0.8, 0.7)]:
            h = m.astype(float) @ [x, y, 1.0]
            assert h[3] > 0
            expected = camera.point_at_height(*pixel_uv((x * 640, y * 480)), 0.018) - tcp
            np.testing.assert_allclose(h[:3] / h[3], expected, atol=2e-5)
    above = plane_click_map(camera, 0.7, tcp)  # the plane behind the camera: nothing placeable
    assert (above.astype(float) @ [0.5, 0.5, 1.0])[3] < 0
    assert not plane_click_map(camera, 0.6, tcp).any()
