"""`posture alerts`: rules over the gateway's metrics and events → nudges with a stretch, on the phone's topic."""
