#!/usr/bin/env bash
# End-to-end test on kind: a real cluster, the chart as users install it, the
# GitLab stand-in in place of GitLab, then e2e/test_e2e.py.
#
#   bash e2e/run.sh          # E2E_KEEP=1 keeps the cluster afterwards
#
# Where docker (with a reachable engine), kind or kubectl is missing it says so
# and exits 1: a runner without them must not turn green. A cluster of the same
# name that existed before is used and kept, never deleted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${E2E_CLUSTER:-renku-notebooks-e2e}"
NAMESPACE="${E2E_NAMESPACE:-renku-e2e}"
RELEASE="${E2E_RELEASE:-notebooks}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
ARTIFACTS="$ROOT/test-artifacts/e2e"
STANDIN_IMAGE="renku-notebooks-e2e-standin:local"

missing() { echo "e2e cannot run: $*" >&2; exit 1; }
command -v docker >/dev/null || missing "docker is not installed"
docker info >/dev/null 2>&1 || missing "docker is installed but no docker engine is reachable"
command -v kind >/dev/null || missing "kind is not installed"
command -v kubectl >/dev/null || missing "kubectl is not installed"
# the helm the tests pin (tests/setup/install-helm.sh), not whatever is on PATH
HELM="$(bash tests/setup/install-helm.sh | tail -n 1)"
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
    for component in hub proxy glue singleuser-server; do
        kubectl --namespace "$NAMESPACE" logs --all-containers --prefix --tail=-1 \
            -l "app.kubernetes.io/component=$component" > "$ARTIFACTS/$component.log" 2>&1 || true
    done
    kubectl --namespace "$NAMESPACE" logs -l app=gitlab-standin --tail=-1 \
        > "$ARTIFACTS/gitlab-standin.log" 2>&1 || true
}

cleanup() {
    status=$?
    [ "$status" -eq 0 ] || collect
    "${CHARTPRESS[@]}" --reset >/dev/null 2>&1 || true  # the chart's image tags back to placeholders
    if [ -z "${E2E_KEEP:-}" ] && [ "$CREATED" = 1 ]; then
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
CREATED=0
trap cleanup EXIT

echo "--- kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --config e2e/kind-config.yaml --wait 180s
    CREATED=1
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "--- images (chartpress)"
# always build: a tag that exists in a remote registry must not skip the local build
"${CHARTPRESS[@]}" --force-build
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
# user pods, the hub, the proxy and the glue must all pass the `restricted` level
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label --overwrite namespace "$NAMESPACE" \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest
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

echo "--- upgrade: a new profile, then a launch with it"
UPGRADE="$(mktemp)"
cat > "$UPGRADE" <<'VALUES'
jupyterhub:
  custom:
    notebooks:
      profiles:
        - {name: tiny, cpu: 0.2, memory: 512Mi, default: true}
        - {name: bigger, cpu: 0.3, memory: 600Mi}
VALUES
"$HELM" upgrade "$RELEASE" helm-chart/renku-notebooks --namespace "$NAMESPACE" \
    --values values/kind.yaml --values "$UPGRADE" --wait --timeout 10m
rm -f "$UPGRADE"
E2E_NAMESPACE="$NAMESPACE" E2E_PROFILE=bigger "$PYTHON" -m pytest -v -p no:cacheprovider \
    e2e/test_e2e.py -k launch
