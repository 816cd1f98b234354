"""lookalike: content-based image search (VGG16 descriptors, embedded or Elasticsearch store)."""
