"""Parallelism beyond plain data parallel: Ulysses sequence parallelism and FSDP2 sharding (imports only torch)."""
