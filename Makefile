# Bootstraps .venv with Python 3.11 (or python3) and runs the main job / the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test browser xvfb bench clean gui

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[export,demo,test]"
	touch $(STAMP)

demo: $(STAMP) gui
	$(BIN)/edge-saliency run

# The project depends on opencv-python-headless (no X libraries needed). When there is a display,
# the demo wants a window: put OpenCV's GUI build (the gui extra, same version) over the headless
# one. Both packages install the module cv2 into the same folder, so --force-reinstall --no-deps
# makes the GUI build's files the ones imported while the headless requirement stays satisfied.
# Without a display nothing is changed and `edge-saliency run` runs headless (and says so).
gui: $(STAMP)
	@if [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ]; then :; \
	elif $(BIN)/python -c "import sys; from edge_saliency.sysdeps import gui_backend; sys.exit(0 if gui_backend() else 1)" 2>/dev/null; then :; \
	else v=$$($(BIN)/python -c "from importlib.metadata import version; print(version('opencv-python-headless'))") && \
	  echo "a display is set: installing OpenCV's GUI build (opencv-python==$$v) for the window" && \
	  $(BIN)/python -m pip install -q --force-reinstall --no-deps "opencv-python==$$v"; fi

test: $(STAMP) browser xvfb
	$(BIN)/python -m pytest -q

# Debian's Chromium and ChromeDriver for the daemon's browser test (tests/test_serve_browser.py).
# Installed when missing and possible (root, apt-get); otherwise that test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "note: could not install chromium: the browser test will be skipped"; \
	else echo "note: chromium/chromedriver not installed: the browser test will be skipped"; fi

# Xvfb for the window tests (tests/test_device_side.py: a display with and without OpenCV's GUI
# build); installed when missing and possible, otherwise those tests skip and say why.
xvfb:
	@if command -v Xvfb >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing xvfb (apt-get) for the window tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb >/dev/null) \
	  || echo "note: could not install xvfb: the window tests will be skipped"; \
	else echo "note: Xvfb not installed: the window tests will be skipped"; fi

bench: $(STAMP)
	$(BIN)/python benchmarks/export_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
