"""The DVC pipeline as Argo Workflows (hera): generated manifests committed under apps/."""
