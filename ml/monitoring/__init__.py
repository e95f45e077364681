"""Drift detection on live inputs and retraining triggers (runs as a CronJob; `make drift`)."""
