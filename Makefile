# Bootstraps .venv with Python 3.11 (or python3) and runs the main job / the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test browser x11 tools bench clean gui gui-build

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[export,demo,test]"
	# timm's and torchvision's model code for the architecture tests (random weights, nothing is
	# downloaded). --no-deps: their own requirements would replace the pinned CPU torch with a
	# multi-GB CUDA build; export/thirdparty.py makes torchvision's models load without its ops.
	$(BIN)/python -m pip install -q --no-deps timm==1.0.31 torchvision==0.28.0
	touch $(STAMP)

demo: $(STAMP) gui
	$(BIN)/edge-saliency run

# The project depends on opencv-python-headless (no X libraries needed). When there is a display,
# the demo wants a window: put OpenCV's GUI build (the gui extra, same version) over the headless
# one. Both packages install the module cv2 into the same folder, so --force-reinstall --no-deps
# makes the GUI build's files the ones imported while the headless requirement stays satisfied.
# Without a display nothing is changed and `edge-saliency run` runs headless (and says so).
gui: $(STAMP)
	@if [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ]; then :; else $(MAKE) -s gui-build; fi

gui-build: $(STAMP)
	@if $(BIN)/python -c "import sys; from edge_saliency.runtime.sysdeps import gui_backend; sys.exit(0 if gui_backend() else 1)" 2>/dev/null; then :; \
	else v=$$($(BIN)/python -c "from importlib.metadata import version; print(version('opencv-python-headless'))") && \
	  echo "installing OpenCV's GUI build (opencv-python==$$v) for the window" && \
	  $(BIN)/python -m pip install -q --force-reinstall --no-deps "opencv-python==$$v"; fi

# The suite runs on the headless OpenCV the project installs; the real-window tests
# (tests/e2e/test_window_x11.py, tests/e2e/test_device_side.py) give `run` OpenCV's GUI build of the
# same version first on its path (pip --target into a cache folder, tests/opencv_builds.py).
test: $(STAMP) browser x11 tools
	$(BIN)/python -m pytest -q

# Debian's Chromium and ChromeDriver for the daemon's browser test (tests/e2e/test_serve_browser.py).
# Installed when missing and possible (root, apt-get); otherwise that test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "note: could not install chromium: the browser test will be skipped"; \
	else echo "note: chromium/chromedriver not installed: the browser test will be skipped"; fi

# Xvfb, xdotool and xwd for the window tests (tests/e2e/test_window_x11.py, tests/e2e/test_device_side.py): the real `run` window on an
# X server, keys pressed, the window captured. Installed when missing and possible, else it skips.
x11:
	@if command -v Xvfb >/dev/null && command -v xdotool >/dev/null && command -v xwd >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing xvfb, xdotool and x11-apps (apt-get) for the window test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xdotool x11-apps >/dev/null) \
	  || echo "note: could not install xvfb/xdotool: the window test will be skipped"; \
	else echo "note: xvfb/xdotool/xwd not installed: the window test will be skipped"; fi

# Debian's mosquitto (MQTT broker), promtool (package prometheus) and openssl for the daemon's MQTT and
# metrics tests (tests/e2e/test_serve_mqtt.py, tests/integration/test_serve_metrics.py); the tests also try this
# themselves and skip, saying why, where it is impossible.
tools:
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then mq=1; else mq=; fi; \
	if [ -n "$$mq" ] && command -v promtool >/dev/null && command -v openssl >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing mosquitto, prometheus (promtool) and openssl (apt-get) for the MQTT and metrics tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	     mosquitto prometheus openssl >/dev/null) \
	  || echo "note: could not install mosquitto/prometheus: the MQTT and promtool tests will be skipped"; \
	else echo "note: mosquitto/promtool not installed: the MQTT and promtool tests will be skipped"; fi

bench: $(STAMP)
	$(BIN)/python benchmarks/export_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
