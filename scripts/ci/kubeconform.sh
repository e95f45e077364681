#!/bin/sh
# Validate rendered manifests (never kustomization.yaml files) with kubeconform, strictly, against
# the Kubernetes schemas plus the repo's CRD schemas (schemas/<group>/<kind>_<version>.json).
# Runs in the kubeconform image (no make); `make kubeconform` calls this same script.
set -eu
rendered=${1:?usage: kubeconform.sh DIR_OF_RENDERED_YAML}
out=${KUBECONFORM_REPORT:-.bench/manifests/kubeconform.junit.xml}
mkdir -p "$(dirname "$out")"
kubeconform -strict -summary -output junit -kubernetes-version 1.30.0 \
  -schema-location default \
  -schema-location 'schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json' \
  "$rendered" >"$out" || { cat "$out"; exit 1; }
cat "$out"
