"""`posture report`: one device's day, read back from InfluxDB, drawn as a PNG or a self-contained HTML page.

query.py reads the day's points (InfluxQL over HTTP), day.py turns them into a DayReport (pure),
draw.py draws it (pure: bytes and text out), cli.py is the command.
"""
