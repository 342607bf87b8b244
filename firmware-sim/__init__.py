"""The virtual posture sensor: a BLE peripheral on BlueZ's D-Bus API with a motion and IMU model."""
