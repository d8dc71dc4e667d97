#!/usr/bin/env bash
# Pin every image under infra/k8s to the digest its tag points at now, in place:
#   image: REPO:TAG[@sha256:OLD]  ->  image: REPO:TAG@sha256:NEW
# Needs `crane` (go-containerregistry) and access to the registries. Run it to pin an image that is
# still marked "digest pending" (then delete its checkov.io/skip1 annotation and its line in the
# table of infra/README.md) or to move to a new tag after editing the tag. Review `git diff`.
# Images that cannot be resolved (e.g. your own rfau image before it is pushed) are left as they are.
set -euo pipefail
cd "$(dirname "$0")"
command -v crane >/dev/null || { echo "crane not found: https://github.com/google/go-containerregistry" >&2; exit 1; }
grep -rl --include='*.yaml' -E '^\s+image: ' . | while read -r file; do
  grep -oE '^\s+image: \S+' "$file" | awk '{print $2}' | sort -u | while read -r ref; do
    tag=${ref%@sha256:*}
    if digest=$(crane digest "$tag" 2>/dev/null); then
      sed -i "s|image: ${ref}\$|image: ${tag}@${digest}|" "$file"
      echo "$file: $tag@$digest"
    else
      echo "$file: $tag not resolved, left as it is" >&2
    fi
  done
done
