"""Each model's DVC pipeline as Argo Workflows (hera), and the other manifests generated per app
from models.yaml: generated files committed under apps/<app>/base/continuous-training/."""
