"""Provenance: a signed C2PA manifest and an invisible watermark on every video we write, and the detector."""
