"""The DVC pipeline as Argo Workflows (hera): generated manifests committed under apps/."""

# The trainer image's logical name (ml/training.Dockerfile) in the generated workflow and the drift
# CronJob; each overlay's `images:` pins it and the release tool moves its tag with the service's.
TRAINER_IMAGE = "digits-trainer"
