"""Helpers the tests share: MQTT clients, known day messages, server starters, a stand-in gateway."""
