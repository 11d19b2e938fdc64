"""`edge-saliency serve`, the device daemon: its loop, HTTP API and page, MJPEG streams, explain
jobs, several cameras, MQTT, Prometheus metrics, systemd notification, and its config."""
