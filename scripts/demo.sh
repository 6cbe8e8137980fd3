#!/usr/bin/env bash
# Run the demo: publish and consume a few thousand messages, then report.
# With no arguments it starts an embedded Valkey; pass --url to use a server.
set -euo pipefail
. "$(dirname "$0")/_venv.sh"
exec kombu-streams demo "$@"
