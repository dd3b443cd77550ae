"""pixelvla_ros: the ROS 2 nodes that run PixelVLA on a robot arm.

The generated message modules (`pixelvla_ros.msg`) are installed by the CMake build into the
install prefix's site-packages, which is not this source folder in an editable install: extend
the package path so both halves import as one package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
