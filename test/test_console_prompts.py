"""Prompts from the operator's clicks and drags on the console's image (pixels, corner origin)."""
import pytest

from pixelvla_ros.console.prompts import MAX_POINTS, GestureError, PromptSpec, build_prompt

W, H = 640, 480


def test_click_is_a_point_with_a_foreground_label():
    assert build_prompt("target", "point", [[100.5, 40.25]], W, H) == PromptSpec("target", "point", ((100.5, 40.25),), (1,))
    assert build_prompt("place", "point", [[0, 0]], W, H).labels == (1,)  # place prompts: labels all 1


def test_click_outside_the_image_is_refused():
    for x, y in [(-0.1, 5), (W, 5), (5, H), (float("nan"), 3)]:
        with pytest.raises(GestureError):
            build_prompt("target", "point", [[x, y]], W, H)


def test_drag_is_a_box_ordered_and_clamped_to_the_image():
    spec = build_prompt("target", "box", [[300, 200], [120.5, -30]], W, H)
    assert spec.kind == "box" and spec.points == ((120.5, 0.0), (300.0, 200.0)) and spec.labels == ()
    assert build_prompt("place", "box", [[600, 400], [900, 900]], W, H).points == ((600.0, 400.0), (640.0, 480.0))


def test_a_box_thinner_than_a_pixel_is_refused():
    with pytest.raises(GestureError, match="thinner than a pixel"):
        build_prompt("target", "box", [[10, 10], [10.5, 200]], W, H)


def test_line_keeps_its_vertices_in_order_without_repeats():
    spec = build_prompt("target", "line", [[10, 10], [50, 60], [50, 60], [700, 60]], W, H)
    assert spec.points == ((10.0, 10.0), (50.0, 60.0), (640.0, 60.0))
    with pytest.raises(GestureError, match="two different points"):
        build_prompt("target", "line", [[10, 10], [10, 10]], W, H)
    with pytest.raises(GestureError, match=f"at most {MAX_POINTS}"):
        build_prompt("target", "line", [[i, i] for i in range(MAX_POINTS + 1)], W, H)


def test_malformed_gestures():
    with pytest.raises(GestureError, match="marks"):
        build_prompt("elsewhere", "point", [[1, 1]], W, H)
    with pytest.raises(GestureError, match="kind"):
        build_prompt("target", "mask", [[1, 1]], W, H)
    with pytest.raises(GestureError, match="numbers"):
        build_prompt("target", "point", [["a", 1]], W, H)
    with pytest.raises(GestureError, match="one click"):
        build_prompt("target", "point", [[1, 1], [2, 2]], W, H)


def test_the_line_limit_is_the_policys():
    from pixelvla_ros import prompt_conversions

    assert MAX_POINTS == prompt_conversions.MAX_POINTS
