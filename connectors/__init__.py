"""Connectors: Kafka source and dead-letter sink, PostgreSQL sink, the embedded (local) store,
and the connector jars they need."""
