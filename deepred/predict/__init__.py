"""Predictions from any trained model: the Predictor interface, the pipeline's prediction step, ensembles, users'
own cutouts (`deepred predict`) and the RAIL estimator."""
