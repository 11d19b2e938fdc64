#!/bin/sh
# Install edge-saliency as a systemd service on a Raspberry Pi, a Jetson or any Linux box.
#
#   sudo deploy/install.sh [--model FILE.onnx] [--python python3] [--no-start]
#
# - a venv in /opt/edge-saliency/venv with this package installed (device runtime: no torch)
# - the model (if given) in /opt/edge-saliency/models/
# - /etc/edge-saliency/config.toml from deploy/config.example.toml (an existing one is kept), mode
#   0600 and root's: it holds a freshly generated token, printed once here; the service reads it as
#   a systemd credential (LoadCredential=), so the unprivileged service user needs no access to it
# - /etc/systemd/system/edge-saliency.service, then systemctl enable --now edge-saliency
#
# On a Jetson, pass --system-site-packages to use JetPack's onnxruntime-gpu and OpenCV
# (see deploy/JETSON.md).
set -eu

PREFIX=/opt/edge-saliency
CONF_DIR=/etc/edge-saliency
UNIT=/etc/systemd/system/edge-saliency.service
PYTHON=python3
MODEL=""
START=1
SYSTEM_SITE=""

while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --no-start) START=0; shift ;;
        --system-site-packages) SYSTEM_SITE="--system-site-packages"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo deploy/install.sh)" >&2
    exit 2
fi
SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$SRC/pyproject.toml" ]; then
    echo "install.sh: run it from an edge-saliency checkout (no pyproject.toml in $SRC)" >&2
    exit 2
fi
if [ -n "$MODEL" ] && [ ! -f "$MODEL" ]; then
    echo "install.sh: model file not found: $MODEL" >&2
    exit 2
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
    echo "install.sh: $PYTHON is older than 3.10" >&2; exit 2; }

echo "== venv in $PREFIX/venv"
install -d -m 0755 "$PREFIX" "$PREFIX/models"
[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv $SYSTEM_SITE "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet "$SRC"
cp "$SRC/README.md" "$PREFIX/README.md"

if [ -n "$MODEL" ]; then
    install -m 0644 "$MODEL" "$PREFIX/models/$(basename "$MODEL")"
    echo "== model: $PREFIX/models/$(basename "$MODEL")"
fi

echo "== config in $CONF_DIR"
install -d -m 0755 "$CONF_DIR"
# systemd >= 247 hands the root-only config to the service as a credential (LoadCredential=, %d);
# older ones (Ubuntu 20.04 / JetPack 5: 245) cannot: there the config is world-readable without
# the token, and the token goes to the 0600 environment file systemd reads as root.
SYSTEMD_VERSION=$(systemctl --version 2>/dev/null | awk 'NR == 1 {print $2}')
CREDENTIALS=1
case "$SYSTEMD_VERSION" in
    ''|*[!0-9]*) ;;
    *) [ "$SYSTEMD_VERSION" -ge 247 ] || CREDENTIALS=0 ;;
esac
TOKEN=""
if [ ! -f "$CONF_DIR/config.toml" ]; then
    TOKEN=$("$PREFIX/venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
    if [ "$CREDENTIALS" -eq 1 ]; then
        # written 0600 from the start (umask), never world-readable for a moment
        (umask 077 && sed "s|^# token = .*|token = \"$TOKEN\"|" "$SRC/deploy/config.example.toml" > "$CONF_DIR/config.toml")
    else
        (umask 077 && echo "EDGE_SALIENCY_TOKEN=$TOKEN" > "$CONF_DIR/env")
        install -m 0644 "$SRC/deploy/config.example.toml" "$CONF_DIR/config.toml"
    fi
    if [ -n "$MODEL" ]; then
        sed -i "s|^# model = .*|model = \"$PREFIX/models/$(basename "$MODEL")\"|" "$CONF_DIR/config.toml"
    fi
else
    echo "   keeping the existing $CONF_DIR/config.toml"
fi
chown root:root "$CONF_DIR/config.toml"
if [ "$CREDENTIALS" -eq 1 ]; then
    chmod 0600 "$CONF_DIR/config.toml"
elif grep -Eq '^[[:space:]]*(token|password)[[:space:]]*=' "$CONF_DIR/config.toml"; then
    echo "install.sh: systemd $SYSTEMD_VERSION cannot pass a root-only config to the service, and" >&2
    echo "   $CONF_DIR/config.toml holds a token or an MQTT password: move them to $CONF_DIR/env (0600)" >&2
    echo "   as EDGE_SALIENCY_TOKEN=... and EDGE_SALIENCY_MQTT_PASSWORD=..." >&2
    exit 2
else
    chmod 0644 "$CONF_DIR/config.toml"
fi
[ ! -f "$CONF_DIR/env" ] || chmod 0600 "$CONF_DIR/env"
# check the config now: a bad key is reported here rather than in a restart loop
"$PREFIX/venv/bin/python" -c "
import sys
from edge_saliency.serve.config import load_config
from edge_saliency.errors import UserError
try:
    load_config('$CONF_DIR/config.toml')
except UserError as e:
    sys.exit(f'install.sh: {e}')
"

echo "== systemd unit $UNIT"
if [ "$CREDENTIALS" -eq 1 ]; then
    install -m 0644 "$SRC/deploy/edge-saliency.service" "$UNIT"
else
    sed -e '/^LoadCredential=config.toml:/d' \
        -e "s|--config %d/config.toml|--config $CONF_DIR/config.toml|" \
        "$SRC/deploy/edge-saliency.service" > "$UNIT"
    chmod 0644 "$UNIT"
fi
systemctl daemon-reload
if [ "$START" -eq 1 ]; then
    systemctl enable --now edge-saliency
    systemctl --no-pager --lines=5 status edge-saliency || true
    echo "== logs: journalctl -u edge-saliency -f   page: http://127.0.0.1:8080/ (see listen in $CONF_DIR/config.toml)"
else
    systemctl enable edge-saliency
    echo "== enabled; start with: systemctl start edge-saliency"
fi
if [ -n "$TOKEN" ]; then
    echo "== the token (shown once; kept readable by root only in $CONF_DIR):"
    echo "   $TOKEN"
    echo "   log in from a browser with http://<this device>:8080/?token=$TOKEN"
fi
