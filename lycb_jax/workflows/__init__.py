"""Workflows over the library: the transport study (batched multi-temperature MD, then the transport
report) and the sweep of structures x temperatures (:mod:`.study`)."""
