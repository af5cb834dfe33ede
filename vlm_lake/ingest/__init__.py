"""Raw uploads -> ``image_lance`` and ``text_lance``, with bad input quarantined.

Also the listing fingerprints the sensor uses to see that a source changed.
"""
