#!/usr/bin/env bash
# Fails when the committed generated code (lib/gen, proto/vop.binpb) differs from what proto/ generates.
set -euo pipefail
cd "$(dirname "$0")/.."
npx buf generate
npx buf build -o proto/vop.binpb
if ! git diff --exit-code --stat -- lib/gen proto/vop.binpb; then
  echo "generated code is stale: run 'npm run gen' and commit the result" >&2
  exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- lib/gen)
if [ -n "$untracked" ]; then
  echo "untracked generated files (commit them):" >&2
  echo "$untracked" >&2
  exit 1
fi
echo "generated code is up to date"
