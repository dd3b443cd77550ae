"""The table plane RViz shows (training.visualization.table_mesh): what a viewer sees there is what the camera saw.

A virtual RViz camera casts rays at the textured plane (RViz's "Publish Point" returns the first rendered surface
a click's ray meets); the point hit, projected with the camera model as the prompt node does, lands on the pixel
whose colour the plane shows at that point.
"""
import numpy as np

from pixelvla_robots.camera import CameraModel
from pixelvla_training.visualization import table_mesh


def look_at(position, target, width, height, f) -> CameraModel:
    """A pinhole camera at `position` (m, base frame) looking at `target`, image x right and y down."""
    z = np.asarray(target, float) - position
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    rotation = np.stack([x, np.cross(z, x), z], axis=1)  # optical frame -> base frame
    return CameraModel("cam", width, height, f, f, (width - 1) / 2, (height - 1) / 2, np.asarray(position, float), rotation)


# The robot's camera, over the table and behind it (as the simulator's); 4 x 4 pixels per cell.
CAMERA = look_at([0.75, 0.05, 0.55], [0.3, 0.0, 0.0], 256, 192, 220.0)
CELLS = (64, 48)


def cell_image(seed=0) -> np.ndarray:
    """A (192, 256, 3) image whose 4 x 4 pixel cells each have one random colour."""
    cells = np.random.default_rng(seed).integers(0, 256, (CELLS[1], CELLS[0], 3), dtype=np.uint8)
    return np.repeat(np.repeat(cells, 4, axis=0), 4, axis=1)


def first_hits(origin, directions, vertices):
    """Möller-Trumbore: for each ray, (triangle index, distance, barycentric u, v) of the nearest hit, or -1."""
    a, b, c = vertices[0::3], vertices[1::3], vertices[2::3]
    e1, e2 = b - a, c - a
    results = []
    for d in directions:
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            s = origin - a
            u = np.einsum("ij,ij->i", s, p) * inv
            q = np.cross(s, e1)
            v = (q @ d) * inv
            t = np.einsum("ij,ij->i", e2, q) * inv
        hit = (np.abs(det) > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if not hit.any():
            results.append((-1, np.inf, 0.0, 0.0))
            continue
        i = np.flatnonzero(hit)[np.argmin(t[hit])]
        results.append((i, t[i], u[i], v[i]))
    return results


def test_a_click_on_the_plane_projects_back_onto_the_pixel_whose_colour_it_shows():
    image = cell_image()
    vertices, colors = table_mesh(CAMERA, image, height=0.0, cells=CELLS, max_range=3.0)
    viewer = look_at([0.2, -0.7, 0.8], [0.35, 0.05, 0.0], 320, 240, 260.0)  # RViz's view, from the side
    rng = np.random.default_rng(1)
    pixels = rng.uniform([0, 0], [320, 240], size=(300, 2))
    rays = [viewer.pixel_ray(u, v)[1] for u, v in pixels]
    checked = 0
    for (index, distance, bu, bv), ray in zip(first_hits(viewer.position, rays, vertices), rays):
        if index < 0 or min(bu, bv, 1 - bu - bv) < 1e-3:
            continue  # missed the plane, or too close to a triangle's edge to name one triangle
        point = viewer.position + distance * ray  # what "Publish Point" returns: on the table, base frame
        assert abs(point[2]) < 1e-9
        (u, v), depth = (a[0] for a in CAMERA.project(point[None]))
        x, y = u + 0.5, v + 0.5  # the prompt node's pixel (corner origin)
        assert depth > 0 and 0 <= x < 256 and 0 <= y < 192
        shown = colors[3 * index]
        seen = image[int(np.floor(y)), int(np.floor(x))] / 255.0
        assert np.allclose(shown, seen), (point, x, y)
        checked += 1
    assert checked > 100, f"only {checked} of 300 rays hit the plane away from an edge"


def test_mesh_shape_colours_and_extent():
    image = cell_image(2)
    vertices, colors = table_mesh(CAMERA, image, height=0.02, cells=CELLS)
    assert vertices.shape == colors.shape and len(vertices) % 3 == 0
    assert len(vertices) == 6 * CELLS[0] * CELLS[1]  # the whole image sees the table from here
    assert np.all(vertices[:, 2] == 0.02)
    assert colors.min() >= 0 and colors.max() <= 1
    assert np.all(colors[0::3] == colors[1::3]) and np.all(colors[0::3] == colors[2::3])  # one colour per triangle
    # the first cell (top-left of the image) has the image's top-left colour; its corner projects to pixel (0, 0)
    assert np.allclose(colors[0], image[0, 0] / 255.0)
    uv, _ = CAMERA.project(vertices[:1])
    assert np.allclose(uv[0] + 0.5, [0.0, 0.0], atol=1e-6)


def test_cells_whose_rays_miss_the_table_are_left_out():
    level = look_at([0.75, 0.0, 0.3], [0.0, 0.0, 0.25], 160, 120, 100.0)  # looks almost level: the horizon is in view
    vertices, colors = table_mesh(level, np.full((120, 160, 3), 128, np.uint8), height=0.0, cells=(32, 24),
                                  max_range=2.0)
    assert 0 < len(vertices) < 6 * 32 * 24
    assert np.all(np.linalg.norm(vertices - level.position, axis=1) <= 2.0 + 1e-9)
    assert np.allclose(colors, 128 / 255.0)
    # the cells that remain are the bottom of the image (below the horizon)
    _, depth = level.project(vertices)
    assert np.all(depth > 0)


def test_odd_image_sizes_use_whole_pixel_cells():
    image = np.zeros((50, 70, 3), np.uint8)
    image[:, 35:] = 255  # right half white
    vertices, colors = table_mesh(CAMERA.__class__("c", 70, 50, 60.0, 60.0, 34.5, 24.5, CAMERA.position, CAMERA.rotation),
                                  image, cells=(7, 5))
    assert len(vertices) == 6 * 35
    per_cell = colors[0::6].reshape(5, 7, 3)[..., 0]
    assert np.allclose(per_cell[:, :3], 0) and np.allclose(per_cell[:, 4:], 1)
    assert np.allclose(per_cell[:, 3], 0.5)  # the middle column is half black, half white
