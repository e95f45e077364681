#!/bin/sh
# Scan one pushed image with trivy; fail on HIGH or CRITICAL findings that have a fix.
# Runs inside the trivy image (no make); `make image-scan IMAGE_KIND=...` calls this same script.
set -eu
kind=${1:?usage: scan_image.sh serving|trainer}
case "$kind" in
  serving) image=${SERVING_IMAGE:?} ;;
  trainer) image=${TRAINER_IMAGE:?} ;;
  *) echo "scan_image.sh: unknown image '$kind' (serving|trainer)" >&2; exit 2 ;;
esac
exec trivy image --exit-code 1 --severity HIGH,CRITICAL --ignore-unfixed --no-progress \
  "$image:${CI_COMMIT_SHA:?}"
