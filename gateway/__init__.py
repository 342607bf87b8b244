"""`posture run`: sensors over BLE → the posture pipeline → MQTT, through an on-disk spool."""
