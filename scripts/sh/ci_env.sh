# Sourced by build_image.sh and scan_image.sh: the CI facts they need, under GitLab's names,
# whichever CI runs them. GitLab sets CI_* itself; on Jenkins the Jenkinsfile binds the registry
# credential (REGISTRY_USR/REGISTRY_PSW, Credentials Binding) and sets CI_REGISTRY, and the Git
# plugin sets GIT_COMMIT (and TAG_NAME on a tag build). A missing fact is an error naming both.
# POSIX sh: the kaniko and trivy images have busybox sh, no bash.
: "${CI_COMMIT_SHA:=${GIT_COMMIT:-}}"
: "${CI_COMMIT_TAG:=${TAG_NAME:-}}"
: "${CI_REGISTRY_USER:=${REGISTRY_USR:-}}"
: "${CI_REGISTRY_PASSWORD:=${REGISTRY_PSW:-}}"
: "${CI_PROJECT_DIR:=${WORKSPACE:-.}}"
ci_require() {  # ci_require NAME JENKINS-HINT...
  name=$1
  shift
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "$(basename "$0"): $name is not set (GitLab sets it; on Jenkins: $*)" >&2
    exit 2
  fi
}
# The version of a release tag `<prefix>vX.Y.Z[-pre][+build]` as an image tag (1.2.3); strict
# semver as scripts/release.py (no leading zeros), so no image is pushed for a tag the release
# would refuse. Empty when not a tag build.
ci_version() {
  [ -n "$CI_COMMIT_TAG" ] || return 0
  v=${CI_COMMIT_TAG##*/}
  n='(0|[1-9][0-9]*)'
  id='(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)'
  if ! printf '%s\n' "$v" | grep -Eq "^v$n\.$n\.$n(-$id(\.$id)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?\$"; then
    echo "$(basename "$0"): tag $CI_COMMIT_TAG is not <app>/vMAJOR.MINOR.PATCH (strict semver)" >&2
    exit 2
  fi
  printf '%s\n' "${v#v}" | tr '+' '_'
}
