#!/bin/sh
# Stamps deploy/kubernetes/agent-node.yaml out for every node labelled vop.dev/role (or
# the nodes named as arguments): one cert-manager Certificate and one DaemonSet per node.
# Usage: deploy/kubernetes/render-agents.sh [NODE...] | kubectl apply -f -
# Run it again when nodes join; delete a node's objects when it leaves:
#   kubectl -n vop-system delete daemonset,certificate,secret -l vop.dev/node=NODE
set -eu
here=$(dirname "$0")
nodes="$*"
if [ -z "$nodes" ]; then
  nodes=$(kubectl get nodes -l vop.dev/role -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
fi
for node in $nodes; do
  case "$node" in
    *[!a-z0-9.-]* | "") echo "render-agents: bad node name '$node'" >&2; exit 2 ;;
  esac
  ip=$(kubectl get node "$node" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' | cut -d' ' -f1)
  [ -n "$ip" ] || { echo "render-agents: node $node has no InternalIP" >&2; exit 2; }
  echo '---'
  sed -e "s/NODE_NAME/$node/g" -e "s/NODE_IP/$ip/g" "$here/agent-node.yaml"
done
