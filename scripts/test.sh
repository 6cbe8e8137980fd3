#!/usr/bin/env bash
# Run the whole test suite against a real redis-server and a real Valkey.
# The fixtures start both servers on free loopback ports; extra arguments go
# to pytest.
set -euo pipefail
. "$(dirname "$0")/_venv.sh"
cd "$root"
exec python -m pytest "$@"
