"""The Elasticsearch ingest plugin: building its zip and wiring its pipeline."""
