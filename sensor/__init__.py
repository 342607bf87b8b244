"""The BLE client: discover a posture sensor, keep a link to it, decode its notifications."""
