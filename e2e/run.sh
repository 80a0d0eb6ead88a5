#!/usr/bin/env bash
# End-to-end test on kind: a real cluster, the chart as users install it, the
# GitLab stand-in in place of GitLab, then e2e/test_e2e.py.
#
#   bash e2e/run.sh          # E2E_KEEP=1 keeps the cluster afterwards
#
# Where docker (with a reachable engine), kind or kubectl is missing it prints
# one line saying so and exits 0: the e2e is skipped, not failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${E2E_CLUSTER:-renku-notebooks-e2e}"
NAMESPACE="${E2E_NAMESPACE:-renku-e2e}"
RELEASE="${E2E_RELEASE:-notebooks}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
ARTIFACTS="$ROOT/test-artifacts/e2e"
STANDIN_IMAGE="renku-notebooks-e2e-standin:local"

skip() { echo "e2e skipped: $*"; exit 0; }
command -v docker >/dev/null || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "docker is installed but no docker engine is reachable"
command -v kind >/dev/null || skip "kind is not installed"
command -v kubectl >/dev/null || skip "kubectl is not installed"
HELM="$(command -v helm || bash tests/setup/install-helm.sh | tail -n 1)"
CHARTPRESS=("$PYTHON" -m chartpress)
# BuildKit reads the Dockerfile.dockerignore beside each Dockerfile (the context is the repo root)
export DOCKER_BUILDKIT=1

collect() {
    mkdir -p "$ARTIFACTS"
    kubectl --namespace "$NAMESPACE" get all,secrets,configmaps,networkpolicies -o wide \
        > "$ARTIFACTS/resources.txt" 2>&1 || true
    kubectl --namespace "$NAMESPACE" describe pods > "$ARTIFACTS/pods.txt" 2>&1 || true
    kubectl --namespace "$NAMESPACE" get events --sort-by=.lastTimestamp \
        > "$ARTIFACTS/events.txt" 2>&1 || true
    for deploy in hub proxy "$RELEASE-renku-notebooks" gitlab-standin; do
        kubectl --namespace "$NAMESPACE" logs "deploy/$deploy" --all-containers \
            > "$ARTIFACTS/$deploy.log" 2>&1 || true
    done
}

cleanup() {
    status=$?
    [ "$status" -eq 0 ] || collect
    "${CHARTPRESS[@]}" --reset >/dev/null 2>&1 || true  # the chart's image tags back to placeholders
    [ -n "${E2E_KEEP:-}" ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    exit "$status"
}
trap cleanup EXIT

echo "--- kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" \
    || kind create cluster --name "$CLUSTER" --config e2e/kind-config.yaml --wait 180s
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "--- images (chartpress)"
"${CHARTPRESS[@]}"
mapfile -t IMAGES < <("${CHARTPRESS[@]}" --list-images)
GLUE_IMAGE="$(printf '%s\n' "${IMAGES[@]}" | grep -- '-glue:')"
# the stand-in runs from the glue image with tests/ and e2e/ added
CONTEXT="$(mktemp -d)"
cp -r tests e2e "$CONTEXT/"
find "$CONTEXT" -name __pycache__ -prune -exec rm -rf {} +
docker build --tag "$STANDIN_IMAGE" --file - "$CONTEXT" <<DOCKERFILE
FROM $GLUE_IMAGE
COPY tests /srv/e2e/tests
COPY e2e /srv/e2e/e2e
WORKDIR /srv/e2e
ENV PYTHONPATH=/srv/e2e
CMD ["python", "-m", "e2e.standin"]
DOCKERFILE
rm -rf "$CONTEXT"
for image in "${IMAGES[@]}" "$STANDIN_IMAGE"; do
    kind load docker-image --name "$CLUSTER" "$image"
done

echo "--- GitLab stand-in"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl --namespace "$NAMESPACE" apply -f - <<MANIFEST
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gitlab-standin
  labels: {app: gitlab-standin}
spec:
  replicas: 1
  selector:
    matchLabels: {app: gitlab-standin}
  template:
    metadata:
      labels: {app: gitlab-standin}
    spec:
      containers:
        - name: standin
          image: $STANDIN_IMAGE
          imagePullPolicy: Never
          ports: [{name: http, containerPort: 8080}]
          readinessProbe:
            tcpSocket: {port: http}
            periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: gitlab-standin
spec:
  type: NodePort
  selector: {app: gitlab-standin}
  ports:
    - {name: http, port: 8080, targetPort: http, nodePort: 31280}
MANIFEST
kubectl --namespace "$NAMESPACE" rollout status deploy/gitlab-standin --timeout=180s

echo "--- chart"
"$HELM" dependency build helm-chart/renku-notebooks
"$HELM" upgrade --install "$RELEASE" helm-chart/renku-notebooks \
    --namespace "$NAMESPACE" --values values/kind.yaml --wait --timeout 10m

echo "--- e2e tests"
E2E_NAMESPACE="$NAMESPACE" "$PYTHON" -m pytest -v -p no:cacheprovider e2e/test_e2e.py
