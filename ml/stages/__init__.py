"""One module per DVC stage; each exposes main(argv) and takes every path from dvc.yaml."""
