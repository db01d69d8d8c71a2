"""The cluster configuration and the connector jar pins, shipped as package data
(``importlib.resources.files("headrace.flink_conf")``)."""
