"""Signal processing, MQTT gateway, MQTT → InfluxDB bridge and alerts (issues 3–5; not built yet)."""
