"""The I/O the three services share: config, the MQTT endpoint, the on-disk spool, the InfluxDB client."""
