"""Audian's API: typed models, the HTTP client, list paging and the Dagster resource."""
