"""The `posture` command: one entry point for the parts in sensor/, pipeline/ and firmware-sim/."""
