"""Spark: the session, the ``lance`` data source, and the one distributed-write protocol.

"Spark tasks write Lance fragments, the driver checks the row count and commits once"
lives in :mod:`vlm_lake.spark.fragment_job`; the join, the features and the data
source's writer all use it.
"""
