#!/bin/sh
# Build and push one image with kaniko (no Docker daemon, no docker-in-docker). Runs inside the
# kaniko debug image, which has no make: `make image-build IMAGE_KIND=...` calls this same script.
# Tags: the commit SHA always; on a release tag also the version (v1.2.3 -> 1.2.3).
set -eu
kind=${1:?usage: build_image.sh serving|trainer}
case "$kind" in
  serving) dockerfile=ml/serving/Dockerfile; image=${SERVING_IMAGE:?} ;;
  trainer) dockerfile=ml/training.Dockerfile; image=${TRAINER_IMAGE:?} ;;
  *) echo "build_image.sh: unknown image '$kind' (serving|trainer)" >&2; exit 2 ;;
esac
set -- --destination "$image:${CI_COMMIT_SHA:?}"
if [ -n "${CI_COMMIT_TAG:-}" ]; then
  set -- "$@" --destination "$image:$(echo "${CI_COMMIT_TAG#v}" | tr '+' '_')"
fi
mkdir -p /kaniko/.docker
auth=$(printf '%s:%s' "${CI_REGISTRY_USER:?}" "${CI_REGISTRY_PASSWORD:?}" | base64 | tr -d '\n')
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "${CI_REGISTRY:?}" "$auth" >/kaniko/.docker/config.json
exec /kaniko/executor --context "${CI_PROJECT_DIR:-.}" --dockerfile "$dockerfile" \
  --cache=true --cache-repo "$image/cache" --reproducible "$@"
