"""The plan: an experiment z as validated data (config, within the bounds of bounds), whether one run of it fits
this machine (capacity) and the deployment it makes (deploy)."""
