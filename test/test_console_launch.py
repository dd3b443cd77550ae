"""The console is in the policy, sim and demo node sets, on by default, with arguments to move or drop it."""
import pytest

from pixelvla_ros.launching.description import load_node_set


@pytest.mark.parametrize("name", ["policy", "sim", "demo"])
def test_console_is_on_by_default_and_console_false_drops_it(name):
    node_set = load_node_set(name)
    specs = {s.name: s for s in node_set.resolve()}
    console = specs["console"]
    assert console.executable == "console_node" and not console.required  # the stack runs on without it
    assert {k: console.parameters[k] for k in ("host", "port")} == {"host": "127.0.0.1", "port": 8080}
    assert "console" not in {s.name for s in node_set.resolve(node_set.parse_cli(["console:=false"]))}
    moved = {s.name: s for s in node_set.resolve(node_set.parse_cli(["console_port:=8099", "console_host:=0.0.0.0"]))}
    assert {k: moved["console"].parameters[k] for k in ("host", "port")} == {"host": "0.0.0.0", "port": 8099}


def test_the_console_shows_what_the_policy_reads():
    for name, args in [("policy", ["camera_topic:=/cam/rgb", "camera_info_topic:=/cam/info"]),
                       ("sim", ["mask_topic:=/sim/target_mask"])]:
        node_set = load_node_set(name)
        specs = {s.name: s for s in node_set.resolve(node_set.parse_cli(args))}
        policy, console = dict(specs["policy"].remappings), dict(specs["console"].remappings)
        assert all(console[topic] == target for topic, target in policy.items()), (name, policy, console)


def test_image_transport_reaches_every_camera_reader_and_the_compressed_topic_follows_the_camera():
    node_set = load_node_set("policy")
    specs = {s.name: s for s in node_set.resolve(node_set.parse_cli(["image_transport:=compressed",
                                                                     "camera_topic:=/cam/rgb"]))}
    for name in ("policy", "segmenter", "visualizer", "console"):
        assert specs[name].parameters["image_transport"] == "compressed", name
        assert dict(specs[name].remappings)["camera/image_raw/compressed"] == "/cam/rgb/compressed", name
    with pytest.raises(ValueError, match="image_transport"):
        node_set.resolve(node_set.parse_cli(["image_transport:=theora"]))
