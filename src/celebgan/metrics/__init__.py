"""Measuring a generator: Inception (and stand-in) features, FID/KID/precision-recall, and the
cache of real-image features. Imports data and the ground floor."""
