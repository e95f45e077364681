#!/bin/sh
# Scan one kind of pushed image (serving|trainer) of every model the pipeline delivers with trivy;
# fail on HIGH or CRITICAL findings that have a fix. Runs inside the trivy image (no make): the
# images are the lines of .bench/ci/images.txt the plan job wrote (`<kind> <folder> <image>`).
# `make image-scan IMAGE_KIND=...` calls this same script.
set -eu
kind=${1:?usage: scan_image.sh serving|trainer}
plan=${IMAGES_PLAN:-.bench/ci/images.txt}
case "$kind" in
  serving|trainer) ;;
  *) echo "scan_image.sh: unknown image '$kind' (serving|trainer)" >&2; exit 2 ;;
esac
[ -f "$plan" ] || { echo "scan_image.sh: $plan missing: run \`make ci-plan\` first" >&2; exit 2; }
status=0
while read -r line_kind _folder image; do
  [ "$line_kind" = "$kind" ] || continue
  trivy image --exit-code 1 --severity HIGH,CRITICAL --ignore-unfixed --no-progress \
    "$image:${CI_COMMIT_SHA:?}" || status=1
done <"$plan"
exit $status
