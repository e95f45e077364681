"""Canary rehearsal: the Argo Rollouts analysis, run for real against a live Prometheus.

Argo Rollouts cannot run on the build machines, so this package reproduces the parts of it that
decide a canary's fate (docs/ROLLOUTS.md, pinned to Argo Rollouts v1.8.3):

- ``expr``: the condition language of success/failure conditions `make manifests` allows;
- ``analysis``: AnalysisRun semantics (templating, validation, measurement/metric/run phases,
  scheduling) as pure code with an injectable clock and query function;
- ``prometheus``: instant queries sent the way Argo sends them;
- ``canary``: the canary step driver, timeline, verdict and reports.

It is a stand-in, not the controller: every report it writes says so.
"""
