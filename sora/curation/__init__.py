"""Curating raw footage into captioned shards: scene splits, scores, deduplication, filters, re-captioning."""
