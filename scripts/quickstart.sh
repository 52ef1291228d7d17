#!/usr/bin/env bash
# Runs leaf-operator end to end on this machine, with no cluster and no Leaf account:
# a local etcd + kube-apiserver (built once from Go modules and cached, see README), the Leaf
# stand-in, the CRD, the operator, then an example TrimbleConnection that becomes Ready, is
# rotated (Secret change) and deleted. Every process and temp file is removed on exit.
#
# Usage: scripts/quickstart.sh [--keep]
#   --keep   after the walkthrough, keep everything running until Ctrl-C (prints a KUBECONFIG)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

keep=false
[[ "${1:-}" == "--keep" ]] && keep=true

leaf_user="3f6c1e9a-2b1d-4c55-9d0e-7b0a8f1c2d3e"
leaf_username="quickstart"
leaf_password="quickstart-password-$RANDOM$RANDOM"
admin_token="quickstart-admin-$RANDOM$RANDOM$RANDOM"

if [[ -t 1 ]]; then bold=$'\e[1m'; plain=$'\e[0m'; else bold=""; plain=""; fi
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/leaf-quickstart.XXXXXX")"
pids=()
names=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((status != 0 && status != 130)); then
    for log in operator standin kube-apiserver etcd; do
      if [[ -s "$work/$log.log" ]]; then
        printf '\n--- last lines of %s.log ---\n' "$log" >&2
        tail -n 25 "$work/$log.log" >&2
      fi
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    # Give each a moment to stop cleanly (the operator releases its watches), then insist.
    for _ in $(seq 50); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
  ((status == 0)) && echo "cleaned up: all processes stopped, $work removed"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Where available, the kernel kills our background processes if this script dies without running
# its cleanup (SIGKILL).
tie=()
if setpriv --help 2>/dev/null | grep -q -- --pdeathsig; then tie=(setpriv --pdeathsig KILL); fi

# start NAME COMMAND...: runs it in the background, output to $work/NAME.log.
start() {
  local name="$1"
  shift
  "${tie[@]}" "$@" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# wait_until WHAT SECONDS COMMAND...: polls COMMAND; fails if it never succeeds or a started
# process died meanwhile.
wait_until() {
  local what="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    for i in "${!pids[@]}"; do
      kill -0 "${pids[i]}" 2>/dev/null || die "${names[i]} exited while waiting for $what (log above)"
    done
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
    sleep 0.3
  done
}

used_ports=" "
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    [[ "$used_ports" == *" $port "* ]] && continue
    # A refused connection means nothing listens there.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      echo "$port"
      return
    fi
  done
  die "found no free loopback port"
}

for tool in cargo openssl curl; do
  command -v "$tool" >/dev/null || die "'$tool' is needed; install it first (see README.md)"
done

say "Control-plane binaries (built from Go modules on first use, then cached; times: README.md, Measured times)"
bin="$(scripts/test-tools.sh | tail -n 1)"
echo "$bin"

say "Building leaf-operator and leaf-standin"
cargo build -p leaf-operator --bin leaf-operator && cargo build -p leaf-standin --bin leaf-standin
target="${CARGO_TARGET_DIR:-$root/target}/debug"
missing="if cargo printed an error above, fix that first; otherwise cargo put the binary elsewhere (build.target-dir or build.target in a .cargo/config.toml): this script looks in \${CARGO_TARGET_DIR:-target}/debug"
[[ -x "$target/leaf-operator" ]] || die "no $target/leaf-operator after the build: $missing"
[[ -x "$target/leaf-standin" ]] || die "no $target/leaf-standin after the build: $missing"

say "Starting etcd and kube-apiserver on loopback"
pki="$work/pki"
mkdir -p "$pki"
(
  cd "$pki"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 30 -subj /CN=leaf-quickstart-ca
  openssl req "${ec[@]}" -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
    -days 30 -extfile apiserver.ext
  openssl ecparam -name prime256v1 -genkey -noout -out sa.key
  openssl ec -in sa.key -pubout -out sa.pub
) >/dev/null 2>&1 || die "openssl failed to make the control plane's certificates"
echo "$admin_token,quickstart-admin,quickstart-admin,\"system:masters\"" >"$work/tokens.csv"

etcd_port="$(free_port)"
peer_port="$(free_port)"
api_port="$(free_port)"
http_port="$(free_port)"
start etcd "$bin/etcd" --name=default --data-dir="$work/etcd-data" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="default=http://127.0.0.1:$peer_port" --unsafe-no-fsync=true --log-level=warn
wait_until "etcd" 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

server="https://127.0.0.1:$api_port"
start kube-apiserver "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" --token-auth-file="$work/tokens.csv" --authorization-mode=RBAC \
  --service-cluster-ip-range=10.0.0.0/24 --service-account-issuer="$server/" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none
wait_until "kube-apiserver /readyz" 90 curl -fsS --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" "$server/readyz"

export KUBECONFIG="$work/kubeconfig"
export KUBECACHEDIR="$work/kube-cache"
cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: quickstart
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: quickstart-admin
  user: {token: "$admin_token"}
contexts:
- name: quickstart
  context: {cluster: quickstart, user: quickstart-admin}
current-context: quickstart
EOF
kubectl() { "$bin/kubectl" "$@"; }
echo "kube-apiserver $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v1[^"]*\)".*/\1/p' | tail -n 1) ready at $server"

say "Starting the Leaf stand-in (a strict local copy of Leaf's credential API)"
start standin "$target/leaf-standin" --listen 127.0.0.1:0 --account "$leaf_username:$leaf_password" --user "$leaf_user"
wait_until "the stand-in to listen" 30 grep -q '^listening on ' "$work/standin.log"
leaf_origin="$(sed -n 's/^listening on //p' "$work/standin.log" | head -n 1)"
echo "Leaf stand-in at $leaf_origin (Leaf user $leaf_user registered)"

say "Installing the TrimbleConnection CRD"
kubectl apply --server-side -f crds/trimbleconnections.yaml
kubectl wait --for=condition=Established crd/trimbleconnections.withleaf.io --timeout=30s

say "Starting leaf-operator (default Leaf account from the environment, metrics on 127.0.0.1:$http_port)"
start operator env LEAF_API_URL="$leaf_origin" LEAF_USERNAME="$leaf_username" LEAF_PASSWORD="$leaf_password" \
  HTTP_ADDR="127.0.0.1:$http_port" RUST_LOG="${RUST_LOG:-info}" "$target/leaf-operator"
wait_until "the operator's /readyz" 60 curl -fsS "http://127.0.0.1:$http_port/readyz"
echo "operator ready (log: $work/operator.log)"

say "Applying examples/: a namespace, the grower's Secret and a TrimbleConnection"
kubectl apply -f examples/namespace.yaml
kubectl apply -f examples/secret.yaml -f examples/trimbleconnection.yaml
kubectl wait --for=condition=Ready tc/smith-farms -n growers --timeout=90s
kubectl get tc -n growers -o wide
kubectl describe tc smith-farms -n growers

jsonpath() { kubectl get tc smith-farms -n growers -o "jsonpath=$1"; }
old_id="$(jsonpath '{.status.credentialId}')"
old_fingerprint="$(jsonpath '{.status.secretFingerprint}')"

say "Rotating: the grower re-authorized, so the Secret gets a new refresh token"
kubectl patch secret smith-farms-trimble -n growers --type merge \
  -p '{"stringData":{"refreshToken":"quickstart-refresh-token-2"}}'
rotated() {
  [[ "$(jsonpath '{.status.secretFingerprint}')" != "$old_fingerprint" ]] &&
    [[ "$(jsonpath '{.status.conditions[?(@.type=="Ready")].status}')" == "True" ]] &&
    kubectl get events -n growers --field-selector reason=Rotated -o name | grep -q .
}
wait_until "the Rotated event and the new fingerprint" 90 rotated
echo "credential $old_id -> $(jsonpath '{.status.credentialId}')"
echo "fingerprint $old_fingerprint -> $(jsonpath '{.status.secretFingerprint}')"
kubectl get events -n growers --field-selector involvedObject.name=smith-farms \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

say "A few of the operator's metrics"
curl -fsS "http://127.0.0.1:$http_port/metrics" | grep -E '^leaf_operator_' | head -n 12 || true

say "Deleting the TrimbleConnection (deletionPolicy Delete: the Leaf credential goes too)"
kubectl delete tc smith-farms -n growers --timeout=60s
code="$(curl -s -o /dev/null -w '%{http_code}' "$leaf_origin/_standin/users/$leaf_user/credential")"
[[ "$code" == "404" ]] || die "the stand-in still holds a credential for $leaf_user (HTTP $code)"
echo "Leaf (stand-in) no longer has a Trimble credential for $leaf_user"
kubectl get events -n growers --field-selector involvedObject.name=smith-farms \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

say "Quickstart complete"
if $keep; then
  echo "Everything keeps running until Ctrl-C. In another shell:"
  echo "  export KUBECONFIG=$KUBECONFIG"
  echo "  $bin/kubectl apply -f $root/examples/secret.yaml -f $root/examples/trimbleconnection.yaml"
  echo "Logs: $work/{operator,standin,kube-apiserver,etcd}.log"
  start keep-running sleep infinity
  wait "${pids[-1]}"
fi
