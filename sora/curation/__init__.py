"""Curation: raw footage -> scene clips -> scores -> deduplicated, filtered, captioned clips, one resumable manifest
per stage (`python data/curate.py STAGE ...`; docs/CURATION.md)."""
