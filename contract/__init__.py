"""The message contract: typed payloads, their JSON Schemas and their InfluxDB line protocol — what the
gateway publishes, the bridge stores and the alert service reads."""
