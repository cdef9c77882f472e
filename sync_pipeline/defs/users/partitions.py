"""App users of the consistency tracker as one dynamic partition set."""

import dagster as dg

users = dg.DynamicPartitionsDefinition(name="users")
