"""Tools that run around the containers: on developer machines and CI runners."""
