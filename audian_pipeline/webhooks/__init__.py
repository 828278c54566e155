"""Audian's webhook events: a receiver that verifies and de-duplicates them, and the durable
store it appends to, which the Dagster assets read."""
