"""ML code that runs inside the containers: pipeline stages, model, serving, monitoring."""
