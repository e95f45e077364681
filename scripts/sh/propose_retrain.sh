#!/bin/sh
# Propose retrained models for review: commit every changed file of the models' folders (dvc.lock,
# metrics, plots, cards, registration records) on a branch and push it with GitLab push options
# that open the merge request. Used by the Argo WorkflowTemplate's propose step and by the GitLab
# retrain pipeline (`make propose-retrain`), so both behave alike. The push token
# (GIT_PUSH_TOKEN) reaches git through a credential helper, never the command line.
set -eu
branch=${1:?usage: propose_retrain.sh BRANCH REASON}
reason=${2:?usage: propose_retrain.sh BRANCH REASON}
target=${CI_DEFAULT_BRANCH:-main}
git checkout -q -b "$branch"
# models/ holds each model's tracked outputs; what DVC caches is git-ignored there
git add -A models
if git diff --cached --quiet; then
  echo "retraining reproduced the committed models exactly: nothing to propose"
  exit 0
fi
git -c user.name=retrain-bot -c user.email=retrain-bot@example.com commit -q \
  -m "Retrain ($reason): $branch" -m "Trigger key: ${RETRAIN_KEY:-none}. Inputs: scripts/retrain.py."
helper='!f() { echo username=oauth2; echo "password=${GIT_PUSH_TOKEN:-}"; }; f'
# GitLab's origin URL carries the job token, which cannot push: use the project's plain URL
remote=origin
if [ -n "${GIT_PUSH_TOKEN:-}" ] && [ -n "${CI_SERVER_URL:-}" ] && [ -n "${CI_PROJECT_PATH:-}" ]; then
  remote="${CI_SERVER_URL%/}/$CI_PROJECT_PATH.git"
fi
git -c credential.helper="$helper" push -q -o merge_request.create \
  -o merge_request.target="$target" -o merge_request.title="Retrained model ($reason)" \
  "$remote" "$branch"
echo "proposed $branch for review (merge request into $target)"
