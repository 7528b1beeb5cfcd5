"""Data: media decoding, shards, buckets, the training stream, latent caches, the built-in dataset, mp4 I/O."""
