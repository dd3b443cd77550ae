# Set-up from nothing, idempotent: each step runs again only when its inputs change.
#   make demo   the shipped policy drives the simulated WidowX through the ROS stack: three fixed seeds prompted,
#               the first once more text-only; a table of outcomes, a video per episode, a JSON result
#   make test   the test suite (unit + real nodes over DDS on localhost + the simulator)
#   make bench  latency benchmarks, recorded in docs/benchmarks.md
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamps

# DDS discovery never leaves this machine; every ROS process gets a domain of its own
# (tests pick a free one per test; see test/conftest.py).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 95
# Camera-sized frames over shared memory (config/fastdds.xml says why).
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds.xml
# Offscreen rendering for the simulator (EGL, Mesa on the CPU where there is no GPU).
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
# Models load from local directories only.
export HF_HUB_OFFLINE := 1

PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
ROS_BUILD_WHEELS := catkin_pkg ros-kilted-ament-cmake ros-kilted-ament-package \
	ros-kilted-ament-cmake-include-directories ros-kilted-ament-cmake-ros-core \
	ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators
MSG_FILES := $(wildcard msg/*.msg)

.PHONY: setup test demo bench clean
setup: $(STAMP)/msgs

$(STAMP)/system:
	@# EGL/OSMesa for offscreen MuJoCo rendering: Debian packages, installed only when missing.
	@if ! ldconfig -p | grep -q 'libEGL_mesa.so.0' || ! ldconfig -p | grep -q 'libOSMesa.so'; then \
	  echo "installing Mesa EGL/OSMesa (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 >/dev/null; \
	fi
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/browser:
	@# Chromium for the operator console's browser tests (Playwright drives /usr/bin/chromium; its own
	@# browser download cannot work here): Debian packages, installed only when missing.
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "installing Chromium (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi
	@mkdir -p $(STAMP) && touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip setuptools wheel

# torch is pinned by constraints.txt (a CPU build of 2.13.0 on these machines).
$(STAMP)/deps: $(PY) setup.py constraints.txt | $(STAMP)/system $(STAMP)/browser
	$(PIP) torch==2.13.0
	$(PIP) -e '.[sim,train,export,test,ros]' $(ROS_BUILD_WHEELS)
	@mkdir -p $(STAMP) && touch $@

# The messages: rosidl + ament_cmake from the wheels, built in-place into pixelvla_ros/msg
# (like `build_ext --inplace`) so the editable package and its messages import as one.
$(STAMP)/msgs: $(STAMP)/deps $(MSG_FILES) CMakeLists.txt package.xml
	@# The wheels' CMake exports name the include dirs of the machine that built them: point
	@# them at this venv's Python and numpy headers.
	@pyinc=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
	npinc=$$($(PY) -c 'import numpy; print(numpy.get_include())'); \
	sed -i -E "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python3\.[0-9]+#$$pyinc#g; \
	  s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$$npinc#g" \
	  $(VENV)/share/*/cmake/*.cmake
	rm -rf build/msgs build/msgs-python
	source $(VENV)/bin/activate && export AMENT_PREFIX_PATH=$$VIRTUAL_ENV && \
	  cmake -S . -B build/msgs -DCMAKE_INSTALL_PREFIX=$$VIRTUAL_ENV -DBUILD_TESTING=OFF \
	    -DPIXELVLA_INSTALL_PYTHON_PACKAGES=OFF -DPYTHON_INSTALL_DIR=$(CURDIR)/build/msgs-python >/dev/null && \
	  cmake --build build/msgs -j2 >/dev/null && cmake --install build/msgs >/dev/null
	rm -rf pixelvla_ros/msg pixelvla_ros/*.so pixelvla_ros/_pixelvla_ros_s.ep.*.c
	cp -r build/msgs-python/pixelvla_ros/msg build/msgs-python/pixelvla_ros/*.so pixelvla_ros/
	$(PY) -c 'from pixelvla_ros.msg import ActionChunk, VisualPrompt, PolicyStatus'
	@touch $@

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) -m pixelvla_ros.demo

bench: setup
	$(PY) -m pixelvla_model.benchmarks
	$(PY) -m pixelvla_sim.benchmarks
	$(PY) -m pixelvla_model.runtime.bench --model tiny --backend all --threads 1 --frames 50 --warmup 5 --output build/bench/runtimes-tiny.json
	$(PY) -m pixelvla_model.runtime.bench --model small --backend all --threads 1 --frames 30 --warmup 3 --output build/bench/runtimes-small.json
	$(PY) -m pixelvla_ros.benchmarks --presets tiny,small

clean:
	rm -rf build pixelvla_ros/msg pixelvla_ros/*.so $(STAMP)
