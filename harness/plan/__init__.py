"""The plan: an experiment z as validated data (config) and the deployment it makes (deploy)."""
