#!/bin/sh
# Scan one kind of pushed image (serving|trainer) of every model the pipeline delivers with trivy.
# Runs inside the trivy image (no make): the images are the lines of .bench/ci/images.txt the plan
# job wrote (`<kind> <folder> <image>`). `make image-scan IMAGE_KIND=...` and the Jenkinsfile call
# this same script (ci_env.sh maps Jenkins' variables).
# Policy: HIGH and CRITICAL findings that have a fixed version fail (`--ignore-unfixed` leaves out
# the ones nobody can fix yet by upgrading; they still show in the table).
# Exit codes keep "vulnerable" apart from "could not scan": 1 = findings, 3 = trivy could not scan
# (registry credentials, network, a missing image), 2 = usage. The registry credentials reach
# trivy as TRIVY_USERNAME/TRIVY_PASSWORD (its own variables), so a private registry can be read.
set -eu
. "$(dirname "$0")/ci_env.sh"
kind=${1:?usage: scan_image.sh serving|trainer}
plan=${IMAGES_PLAN:-.bench/ci/images.txt}
case "$kind" in
  serving|trainer) ;;
  *) echo "scan_image.sh: unknown image '$kind' (serving|trainer)" >&2; exit 2 ;;
esac
[ -f "$plan" ] || { echo "scan_image.sh: $plan missing: run \`make ci-plan\` first" >&2; exit 2; }
ci_require CI_COMMIT_SHA "the Git plugin sets GIT_COMMIT"
ci_require CI_REGISTRY_USER "bind the 'registry' username/password credential as REGISTRY"
ci_require CI_REGISTRY_PASSWORD "bind the 'registry' username/password credential as REGISTRY"
export TRIVY_USERNAME="$CI_REGISTRY_USER" TRIVY_PASSWORD="$CI_REGISTRY_PASSWORD"
found=10  # trivy's exit code for findings; any other failure is trivy's own
vulnerable=0
broken=0
while read -r line_kind _folder image; do
  [ "$line_kind" = "$kind" ] || continue
  status=0
  trivy image --exit-code "$found" --severity HIGH,CRITICAL --ignore-unfixed --no-progress \
    "$image:$CI_COMMIT_SHA" || status=$?
  case $status in
    0) ;;
    "$found") echo "scan_image.sh: $image: HIGH/CRITICAL findings with a fix" >&2; vulnerable=1 ;;
    *) echo "scan_image.sh: $image: trivy could not scan it (exit $status): see above" >&2; broken=1 ;;
  esac
done <"$plan"
[ $broken -eq 0 ] || exit 3
exit $vulnerable
