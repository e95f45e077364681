#!/bin/sh
# Build and push one kind of image (serving|trainer) of every model the pipeline delivers, with
# kaniko (no Docker daemon, no docker-in-docker). Runs inside the kaniko debug image, which has no
# make and no Python: the plan job (`make ci-plan`, scripts/models.py) wrote one line per image
# into .bench/ci/images.txt: `<kind> <model folder> <image>`. `make image-build IMAGE_KIND=...`
# calls this same script, and so does the Jenkinsfile (ci_env.sh maps Jenkins' variables).
# Tags: the commit SHA always; on a release tag (`<app>/vX.Y.Z`) also the version (1.2.3), and
# the plan then lists only that app's model.
# The serving image bakes in its model's folder (MODEL_DIR: model.onnx + registration.json).
set -eu
. "$(dirname "$0")/ci_env.sh"
kind=${1:?usage: build_image.sh serving|trainer}
plan=${IMAGES_PLAN:-.bench/ci/images.txt}
kaniko=${KANIKO_DIR:-/kaniko}  # the image's own folder; a test points it at a stand-in
case "$kind" in
  serving) dockerfile=ml/serving/Dockerfile ;;
  trainer) dockerfile=ml/training.Dockerfile ;;
  *) echo "build_image.sh: unknown image '$kind' (serving|trainer)" >&2; exit 2 ;;
esac
[ -f "$plan" ] || { echo "build_image.sh: $plan missing: run \`make ci-plan\` first" >&2; exit 2; }
ci_require CI_COMMIT_SHA "the Git plugin sets GIT_COMMIT"
ci_require CI_REGISTRY "the Jenkinsfile's environment sets CI_REGISTRY"
ci_require CI_REGISTRY_USER "bind the 'registry' username/password credential as REGISTRY"
ci_require CI_REGISTRY_PASSWORD "bind the 'registry' username/password credential as REGISTRY"
version=$(ci_version)
mkdir -p "$kaniko/.docker"
auth=$(printf '%s:%s' "$CI_REGISTRY_USER" "$CI_REGISTRY_PASSWORD" | base64 | tr -d '\n')
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$CI_REGISTRY" "$auth" >"$kaniko/.docker/config.json"
built=0
while read -r line_kind folder image; do
  [ "$line_kind" = "$kind" ] || continue
  set -- --destination "$image:$CI_COMMIT_SHA"
  [ -z "$version" ] || set -- "$@" --destination "$image:$version"
  "$kaniko/executor" --context "$CI_PROJECT_DIR" --dockerfile "$dockerfile" \
    --build-arg "MODEL_DIR=$folder" --cache=true --cache-repo "$image/cache" --reproducible "$@"
  built=$((built + 1))
done <"$plan"
echo "build_image.sh: built $built $kind image(s)"
