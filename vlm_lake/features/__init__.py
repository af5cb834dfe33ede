"""Image features: ResNet-50 in plain torch, computed on Spark, and similarity search."""
