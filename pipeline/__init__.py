"""Signal processing, pure: IMU arrays in, trunk angles, activity, events and per-minute metrics out;
`posture replay` runs it over a recording."""
