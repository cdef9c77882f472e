"""Promidata suppliers as a dynamic partition set (kept equal to the configured suppliers)."""

import dagster as dg

promidata_suppliers = dg.DynamicPartitionsDefinition(name="promidata_suppliers")
