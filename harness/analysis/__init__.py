"""Helpers of the analysis commands (sweep, fit, optimise, report): the tables as pandas frames and the one
Q_r rule both the measured and the modelled cost use."""
