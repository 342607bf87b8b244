"""`posture bridge`: MQTT → InfluxDB, losing nothing (an on-disk spool while InfluxDB is away)."""
