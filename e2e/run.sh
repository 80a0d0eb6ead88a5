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
# the helm the tests pin: E2E_HELM (CI's, installed at that version on any architecture),
# else tests/setup/install-helm.sh's (x86-64 only); never another version
HELM_VERSION=v3.17.2
HELM="${E2E_HELM:-$(bash tests/setup/install-helm.sh | tail -n 1)}"
case "$("$HELM" version --short 2>/dev/null)" in
    "$HELM_VERSION"+*) ;;
    *) missing "helm $HELM_VERSION (E2E_HELM=$HELM is $("$HELM" version --short 2>&1 || true))" ;;
esac
CHARTPRESS=("$PYTHON" -m chartpress)
# BuildKit reads the Dockerfile.dockerignore beside each Dockerfile (the context is the repo root)
export DOCKER_BUILDKIT=1

collect() {
    mkdir -p "$ARTIFACTS"
    kubectl --namespace "$NAMESPACE" get all,secrets,configmaps,networkpolicies,pvc -o wide \
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
    kubectl --namespace "$NAMESPACE-registry" logs -l app=registry --tail=-1 \
        > "$ARTIFACTS/registry.log" 2>&1 || true
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
echo "--- storage: each server's workspace claim needs the cluster's default StorageClass"
# kind's is `standard`, its local-path provisioner (a node directory per claim, made when the
# first pod mounts it: WaitForFirstConsumer); values/kind.yaml leaves spawner.storageClass ""
DEFAULT_CLASS="$(kubectl get storageclass -o jsonpath='{range .items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{" "}{.provisioner}{"\n"}{end}')"
[ -n "$DEFAULT_CLASS" ] || missing "the cluster has no default StorageClass (kind's local-path)"
echo "default StorageClass: $DEFAULT_CLASS"

echo "--- images (chartpress)"
# always build: a tag that exists in a remote registry must not skip the local build
"${CHARTPRESS[@]}" --force-build
mapfile -t IMAGES < <("${CHARTPRESS[@]}" --list-images)
GLUE_IMAGE="$(printf '%s\n' "${IMAGES[@]}" | grep -- '-glue:')"
# the stand-in runs from the glue image with testing/ and e2e/ added
CONTEXT="$(mktemp -d)"
cp -r testing e2e "$CONTEXT/"
find "$CONTEXT" -name __pycache__ -prune -exec rm -rf {} +
docker build --tag "$STANDIN_IMAGE" --file - "$CONTEXT" <<DOCKERFILE
FROM $GLUE_IMAGE
COPY testing /srv/e2e/testing
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
      # the namespace enforces `restricted`: the stand-in too
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: standin
          image: $STANDIN_IMAGE
          imagePullPolicy: Never
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
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

echo "--- registry: asks for credentials, has the private project's older image"
# e2e-only credentials (the operator's deploy token in real use), no real secret
REGISTRY_USER=e2e-deploy-token
REGISTRY_PASSWORD=e2e-registry-password
# a namespace of its own: the registry runs as root, which `restricted` forbids
REGISTRY_NAMESPACE="$NAMESPACE-registry"
kubectl create namespace "$REGISTRY_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
HTPASSWD="$(mktemp)"
docker run --rm --entrypoint htpasswd httpd:2.4-alpine -Bbn "$REGISTRY_USER" "$REGISTRY_PASSWORD" \
    > "$HTPASSWD"
kubectl --namespace "$REGISTRY_NAMESPACE" create secret generic registry-htpasswd \
    --from-file=htpasswd="$HTPASSWD" --dry-run=client -o yaml | kubectl apply -f -
rm -f "$HTPASSWD"
kubectl --namespace "$REGISTRY_NAMESPACE" apply -f - <<MANIFEST
apiVersion: apps/v1
kind: Deployment
metadata:
  name: registry
  labels: {app: registry}
spec:
  replicas: 1
  selector:
    matchLabels: {app: registry}
  template:
    metadata:
      labels: {app: registry}
    spec:
      containers:
        - name: registry
          image: registry:2.8.3
          env:
            - {name: REGISTRY_AUTH, value: htpasswd}
            - {name: REGISTRY_AUTH_HTPASSWD_REALM, value: e2e}
            - {name: REGISTRY_AUTH_HTPASSWD_PATH, value: /auth/htpasswd}
          ports: [{name: http, containerPort: 5000}]
          volumeMounts: [{name: auth, mountPath: /auth, readOnly: true}]
          readinessProbe:
            tcpSocket: {port: http}
            periodSeconds: 2
      volumes:
        - name: auth
          secret: {secretName: registry-htpasswd}
---
apiVersion: v1
kind: Service
metadata:
  name: registry
spec:
  type: NodePort
  selector: {app: registry}
  ports:
    - {name: http, port: 5000, targetPort: http, nodePort: 31500}
MANIFEST
kubectl --namespace "$REGISTRY_NAMESPACE" rollout status deploy/registry --timeout=180s
# the node's containerd pulls registry.gitlab.test/... from that registry (plain HTTP, at
# its cluster IP: kube-proxy's nftables mode serves no NodePort on the node's localhost)
REGISTRY_ADDRESS="$(kubectl --namespace "$REGISTRY_NAMESPACE" get service registry \
    -o jsonpath='{.spec.clusterIP}'):5000"
docker exec -i "$CLUSTER-control-plane" sh -c 'mkdir -p /etc/containerd/certs.d/registry.gitlab.test && cat > /etc/containerd/certs.d/registry.gitlab.test/hosts.toml' <<TOML
server = "http://$REGISTRY_ADDRESS"
[host."http://$REGISTRY_ADDRESS"]
  capabilities = ["pull", "resolve"]
TOML
# the older commit of the private project gets an image (the sample image, retagged)
CLONE="$(mktemp -d)"
git clone -q --bare "http://oauth2:alice-e2e-token@localhost:31280/group/private-demo.git" "$CLONE/repo.git"
OLDER="$(git -C "$CLONE/repo.git" rev-parse HEAD~1)"
rm -rf "$CLONE"
SAMPLE=quay.io/jupyterhub/k8s-singleuser-sample:4.4.0
docker pull -q "$SAMPLE"
docker tag "$SAMPLE" "localhost:31500/group/private-demo:${OLDER:0:7}"
echo "$REGISTRY_PASSWORD" | docker login localhost:31500 -u "$REGISTRY_USER" --password-stdin
docker push -q "localhost:31500/group/private-demo:${OLDER:0:7}"
docker logout localhost:31500
# the operator's credentials for the chart (values/kind.yaml spawner.registrySecret)
kubectl --namespace "$NAMESPACE" create secret docker-registry e2e-registry \
    --docker-server=registry.gitlab.test --docker-username="$REGISTRY_USER" \
    --docker-password="$REGISTRY_PASSWORD" --dry-run=client -o yaml | kubectl apply -f -

echo "--- chart"
"$HELM" dependency build helm-chart/renku-notebooks
"$HELM" upgrade --install "$RELEASE" helm-chart/renku-notebooks \
    --namespace "$NAMESPACE" --values values/kind.yaml --wait --timeout 10m

echo "--- e2e tests"
E2E_NAMESPACE="$NAMESPACE" "$PYTHON" -m pytest -v -p no:cacheprovider e2e/test_e2e.py

echo "--- a dirty session that the upgrade keeps and the uninstall saves"
STATE="$(mktemp)"
E2E_NAMESPACE="$NAMESPACE" E2E_STAGE=before-upgrade E2E_STATE="$STATE" "$PYTHON" -m pytest -v \
    -p no:cacheprovider e2e/test_e2e.py -k test_leave_a_dirty_session

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
    e2e/test_e2e.py -k test_launch_an_older_commit
E2E_NAMESPACE="$NAMESPACE" E2E_STAGE=after-upgrade E2E_STATE="$STATE" "$PYTHON" -m pytest -v \
    -p no:cacheprovider e2e/test_e2e.py -k test_the_session_outlived_the_upgrade

echo "--- uninstall: the pre-delete hook saves and stops every server first"
"$HELM" uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout 15m
E2E_NAMESPACE="$NAMESPACE" E2E_STAGE=after-uninstall E2E_STATE="$STATE" "$PYTHON" -m pytest -v \
    -p no:cacheprovider e2e/test_e2e.py -k test_the_uninstall_saved_the_session_first
rm -f "$STATE"
