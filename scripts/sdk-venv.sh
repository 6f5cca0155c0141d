#!/usr/bin/env bash
# Make .venv-sdk with Roboflow's inference-sdk (see requirements/sdk.txt); idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv-sdk/.requirements
if [ -x .venv-sdk/bin/python ] && cmp -s requirements/sdk.txt "$stamp" 2>/dev/null; then
  exit 0
fi
rm -rf .venv-sdk
python3 -m venv .venv-sdk
.venv-sdk/bin/pip install --quiet --disable-pip-version-check -r requirements/sdk.txt
cp requirements/sdk.txt "$stamp"
