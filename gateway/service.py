"""`posture run`: sensors over BLE → pipeline → MQTT, for one or more sensors.

asyncio runs the BLE links (bleak) and the pipeline for each batch as it arrives; each device's
results go to its DevicePublisher, whose paho thread talks to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract.identity import device_id
from contract.messages import Status, payload
from contract.validation import load_validators, parse
from gateway.kept import lock_device, read_kept, write_kept
from gateway.publisher import DevicePublisher, adopt_legacy_files, device_file
from gateway.sent_floor import SentFloor
from pipeline.activity import ActivityState
from pipeline.calibration import Calibration, CalibrationRequest
from pipeline.events import MINUTE_S, MinuteMetrics, asking
from pipeline.live import LiveClock, live_message
from pipeline.metrics import SECONDS_IN_MINUTE, merge_minutes
from pipeline.orientation import GyroBias
from pipeline.stream import PosturePipeline
from sensor.batching import BatchCollector
from sensor.discovery import FoundSensor, SensorFilter, discover_each
from sensor.link import LinkSettings, SensorLink
from sensor.profiles import PROFILES
from sensor.stream import ImuBatch
from service_io.config import Config

log = logging.getLogger("posture.gateway")
PUMP_INTERVAL_S = 0.05
# A sensor's link that stopped on an error nobody expected is started again after this: one sensor's fault must not
# end its data for good (an asyncio task that raises ends silently), nor be retried in a tight loop.
LINK_RESTART_S = 30.0
FINAL_FLUSH_S = 10.0
# A sensor silent this long has its open episodes and minutes sent (the pipeline would close them only at the next
# sample): past the link watchdog's 3 s and a reconnect's first round, so a short dropout goes on as before.
LINK_GONE_S = 10.0
# Between scans for sensors not found yet (gateway.sensors): a scan takes radio time from the connected sensors.
LOOK_AGAIN_S = 30.0
# Beside the device's spool: the minutes that ended and are held back, and the minute in progress (_keep_held).
HELD_SUFFIX = ".held.json"
# The minute in progress is kept there too, this often (data time): a kill -9 (a power cut) lost it whole, ~30 s of
# wear a sensor on average (a chaos run: 39-46 s for each of three sensors after one kill), and costs at most this now.
OPEN_KEPT_EVERY_S = 10.0
OFF_SUFFIX = ".off.json"  # beside the device's spool while the sensor is off the body: where it was put down
# Beside the device's spool: the activity classifier's state (sitting or standing, walking) and its sample's time, kept
# every OPEN_KEPT_EVERY_S, at each change and at a stop, for the next start to go on from (_keep_activity).
ACTIVITY_SUFFIX = ".activity.json"
# Beside the device's spool: the orientation filter's gyro bias estimate, the sensor it was learnt on and its sample's
# time, kept every OPEN_KEPT_EVERY_S and at a stop, for the next start's filter to begin with (_keep_gyro_bias).
GYRO_BIAS_SUFFIX = ".gyro_bias.json"
LOOP_STALL_S = 1.0  # a turn of the gateway's loop this late: the host stalled, nothing is judged silent in it
# Each device's status is looked at this often and sent when due (gateway/publisher.py, status_due): a sensor going
# offline shows within a second (unless its link flaps: gateway/status_flaps.py), while an unchanged status goes out
# only at gateway.status_heartbeat_s.
STATUS_CHECK_S = 1.0


@dataclass
class Device:
    """One sensor's path after the link: samples → pipeline → publisher (the link calls on_batch)."""
    pipeline: PosturePipeline
    publisher: DevicePublisher
    collector: BatchCollector
    live_clock: LiveClock  # when the next live state is due (gateway.live_hz)
    window: list[int] = field(default_factory=lambda: [0, 0])  # samples received, lost since the last status sent
    held_since_s: float = 0.0  # monotonic time the collector started holding samples
    saved: Calibration | None = None  # the calibration last written to disk (tried again while it is not the current)
    saved_request: CalibrationRequest | None = None  # the moves asked for, written with it (likewise)
    save_failed: bool = False  # the last try failed: said once, and again when it works
    # The last run's last minute as its stop sent it: this run's part of that minute is added to it (_continued).
    stopped_minute: MinuteMetrics | None = None
    stopped_at_s: float | None = None  # the last run's last sample; None once the first batch here was looked at
    sent_floor: SentFloor | None = None  # samples stamped before the minutes sent before are dropped (a stale clock)
    rx_s: float = 0.0  # monotonic time of the last batch from the link
    link_gone: bool = False  # silent for LINK_GONE_S: what was open went out (_close_when_gone)
    gone_kept: bool = False  # the minute the link was lost in is in the stopped-minute file (_close_when_gone)
    address: str = ""  # the sensor's: saved with its calibration, which another sensor under this id must not take
    # The calibration kept was taken on another sensor, so not restored: said to the wearer at the first sample (why:
    # the request's reason).
    other_sensor: str | None = None
    held_starts: list[float] = field(default_factory=list)  # the ended, held minutes kept on disk (_keep_held)
    # The last sample when the minute in progress was last kept with them (or found not in progress: off the body).
    open_kept_s: float | None = None
    held_kept: bool = False  # the held-minutes file is on disk
    off_since_s: float | None = None  # where the sensor was put down, as kept on disk (OFF_SUFFIX)
    # The last run's activity state and its sample's time (ACTIVITY_SUFFIX): gone on from at this run's first sample.
    last_activity: tuple[ActivityState, float] | None = None
    activity_kept: tuple[ActivityState, float] | None = None  # what this run last kept of it
    gyro_bias_kept_s: float | None = None  # the sample this run last kept the gyro bias at (GYRO_BIAS_SUFFIX)


def wanted_sensors(config: Config) -> dict[str, SensorFilter]:
    """What the gateway looks for, by how a log line names it: each of gateway.sensors, or the first posture sensor."""
    if not config.gateway.sensors:
        return {"a posture sensor": SensorFilter()}
    return {repr(who): SensorFilter(address=who) if who.count(":") == 5 else SensorFilter(name=who)
            for who in config.gateway.sensors}


async def _keep_looking(adapter: str | None, missing: dict[str, SensorFilter], scan_timeout_s: float,
                        arrived: list[FoundSensor], stop: asyncio.Event) -> None:
    """The sensors not found at the start (off, charging, out of range), looked for in one scan every LOOK_AGAIN_S
    until found (the gateway exited "not found", or with no sensor named ran on with none, saying nothing). A scan
    that fails (BlueZ restarting) is said once, and again only when the error changes."""
    said = ""
    while missing and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LOOK_AGAIN_S)
            return
        try:
            found = await discover_each(adapter, scan_timeout_s, missing)
        except Exception as exc:  # the next round tries again
            if (error := f"{type(exc).__name__}: {exc}") != said:
                log.warning("looking for %s: %s (tried again every %.0f s)", ", ".join(missing), error, LOOK_AGAIN_S)
            said = error
            continue
        said = ""
        for who, sensor in found.items():
            del missing[who]
            arrived.append(sensor)


async def _first_scan(adapter: str | None, wanted: dict[str, SensorFilter], scan_timeout_s: float,
                      stop: asyncio.Event) -> dict[str, FoundSensor] | None:
    """The first scan's sensors, or None once `stop` is set: a stop asked for while it scans (up to scan_timeout_s)
    ends the run at once, not after every scan, and starts no sensor only to stop it."""
    scan = asyncio.ensure_future(discover_each(adapter, scan_timeout_s, wanted))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({scan, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not scan.done():
            scan.cancel()  # the scanner stops on the adapter as it unwinds
            await asyncio.wait({scan})
    if stop.is_set():
        if not scan.cancelled():
            scan.exception()  # a scan that failed as the stop came: the stop is what counts
        return None
    return scan.result()


async def run_gateway(config: Config, stop: asyncio.Event, scan_timeout_s: float = 15.0) -> dict[str, Device]:
    spool_dir = Path(config.gateway.spool_dir)
    adapter = config.gateway.adapter or None
    devices: dict[str, Device] = {}
    links: dict[str, SensorLink] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    wanted = wanted_sensors(config)
    first = await _first_scan(adapter, wanted, scan_timeout_s, stop)  # no D-Bus, no BlueZ: said at once (exit 2)
    if first is None:  # stopped while it scanned: nothing was started
        return devices
    sensors: dict[str, FoundSensor] = {}
    for sensor in first.values():
        name = device_id(sensor.name or sensor.address)
        _check_new(name, sensor, sensors, config.pipeline.rate_hz)
        sensors[name] = sensor
    locks = contextlib.ExitStack()
    try:
        for name in sensors:  # before any file of the device is touched: another run's would be changed under it
            locks.enter_context(lock_device(spool_dir, name))
    except BaseException:
        locks.close()
        raise
    for name in sensors:  # every one before any spool opens: a legacy file may be another device's too
        adopt_legacy_files(spool_dir, name)

    def start(name: str, sensor: FoundSensor) -> None:
        devices[name] = device = open_device(config, name, spool_dir, sensor.name or sensor.address, sensor.address)
        link_settings = LinkSettings(adapter=adapter, rate_hz=config.pipeline.rate_hz)
        # Named by its name: a sensor replaced by another of that name is followed (sensor/link.py), not one read here.
        by_name = next((f for f in wanted.values() if f.name and f.name == sensor.name), None)

        def in_use(address: str) -> bool:
            return any(other != name and link.device.address.upper() == address.upper()
                       for other, link in links.items())
        links[name] = SensorLink(sensor.device, _consumer(device, spool_dir, config.gateway.publish_imu), link_settings,
                                 wanted=by_name, in_use=in_use)
        tasks[name] = asyncio.create_task(links[name].run(stop))
        log.info("%s: %s (%s profile) → %s/%s/…", name, sensor.address, sensor.profile, config.mqtt.prefix, name)

    for name, sensor in sensors.items():
        start(name, sensor)
    missing = {who: f for who, f in wanted.items() if who not in first}
    for who in missing:
        log.warning("%s not found (off, out of range, or connected to something else): looked for again every %.0f s",
                    who, LOOK_AGAIN_S)
    arrived: list[FoundSensor] = []
    search = asyncio.create_task(_keep_looking(adapter, missing, scan_timeout_s, arrived, stop))
    stopped_at: dict[str, float] = {}
    next_status = 0.0
    turn_s = time.monotonic()
    try:
        while not stop.is_set():
            while arrived:
                refused = _start_late(arrived.pop(0), sensors, spool_dir, config.pipeline.rate_hz, locks, start)
                if refused and not devices and search.done() and not arrived:
                    # Nothing streams and nothing is looked for: ended as at the start (exit 2), not run on idle.
                    raise RuntimeError(refused)
            _restart_stopped_links(tasks, links, stopped_at, stop)
            # After a stall of this loop (the host's), the notifications queued meanwhile are handled first.
            stalled = time.monotonic() - turn_s > LOOP_STALL_S
            turn_s = time.monotonic()
            for name, d in devices.items():
                # A link that went quiet must not hold samples back from the pipeline.
                if d.collector.held and time.monotonic() - d.held_since_s > d.collector.batch_s:
                    held = d.collector.take()
                    assert held is not None  # it holds samples: take() returns them
                    _process(d, spool_dir, held)
                if not stalled:
                    _close_when_gone(d, spool_dir, links[name].last_rx_s)
                d.publisher.pump()
            if time.monotonic() >= next_status:
                for name, d in devices.items():
                    if d.publisher.publish_status(_status(d, links[name])):
                        d.window = [0, 0]  # link quality is over the time since the last status sent
                next_status = time.monotonic() + min(STATUS_CHECK_S, config.gateway.status_interval_s)
            await asyncio.sleep(PUMP_INTERVAL_S)
    finally:
        stop.set()
        search.cancel()
        await asyncio.gather(search, *tasks.values(), return_exceptions=True)
        await _flush(devices, spool_dir)
        locks.close()
    return devices


def _check_new(name: str, sensor: FoundSensor, sensors: dict[str, FoundSensor], rate_hz: float) -> None:
    # One sensor, one link: found again under another id (listed by name and by address, its name changed since
    # BlueZ last saw it), it was connected twice and each sample published under both ids.
    if same := next((other for other, s in sensors.items() if s.address.upper() == sensor.address.upper()), None):
        raise RuntimeError(f"sensor {sensor.address} ({sensor.name!r}) is already read as {same!r}: "
                           f"gateway.sensors names it twice (by name and by address?)")
    if name in sensors:  # one id, one series: two sensors under it would merge their data
        raise RuntimeError(f"sensors {sensors[name].address} and {sensor.address} both advertise "
                           f"{sensor.name!r} (gateway.sensors): rename one, they would share one device")
    check_rate(name, sensor.profile, rate_hz)


def _start_late(sensor: FoundSensor, sensors: dict[str, FoundSensor], spool_dir: Path, rate_hz: float,
                locks: contextlib.ExitStack, start: Callable[[str, FoundSensor], None]) -> str | None:
    """A sensor found after the start joins the others. What the start refuses in one line (exit 2) is said, and
    this sensor left out: the others run on. Why it was left out, or None once it runs."""
    name = device_id(sensor.name or sensor.address)
    try:
        _check_new(name, sensor, sensors, rate_hz)
        locks.enter_context(lock_device(spool_dir, name))
    except (RuntimeError, ValueError, OSError) as exc:
        log.error("%s: found, and left out: %s", name, exc)
        return str(exc)
    sensors[name] = sensor
    if name.replace(":", "_") not in sensors:  # a running device's files are not taken from under it
        adopt_legacy_files(spool_dir, name)
    log.info("%s: found", name)
    try:
        start(name, sensor)
    except Exception as exc:  # its spool's disk full, say: this sensor is left out, not the others
        log.exception("%s: found, and could not be started", name)
        return f"{name}: could not be started: {type(exc).__name__}: {exc}"
    return None


def taken_on_another(taken_on: str | None, address: str) -> bool:
    """Whether what the last run kept (the calibration, the gyro bias) was learnt on a sensor other than this one
    (`address`): both known, and not the same address (BLE addresses compare in any case). Unknown either way: taken."""
    if not (taken_on and address):
        return False
    return taken_on.upper() != address.upper()


def open_device(config: Config, name: str, spool_dir: Path, shown_name: str, address: str = "") -> Device:
    """One device's path, its publisher started, with what the last run kept beside its spool: the calibration (if
    taken on this sensor, `address`), the minute its stop (or a lost link) sent unfinished, and where the minutes it
    sent end."""
    publisher = DevicePublisher.open(config, name, spool_dir, shown_name)
    publisher.start()
    calibration, taken_on, request = load_calibration(spool_dir, name) or (None, None, None)
    if calibration is not None and taken_on_another(taken_on, address):
        log.warning("%s: the calibration kept was taken on sensor %s, and this is %s: not restored (two sensors "
                    "advertise %r? Name yours by its address in gateway.sensors); calibrate again", name, taken_on,
                    address, shown_name)
        calibration = request = None  # nor the moves asked for under it: this sensor is asked for its own
    pipeline = PosturePipeline(config.pipeline.settings(), calibration=calibration, request=request)
    if (bias := load_gyro_bias(spool_dir, name, address)) is not None:
        pipeline.orientation.go_on(bias)
    device = Device(pipeline, publisher, BatchCollector(config.gateway.pipeline_batch_s, config.pipeline.rate_hz),
                    LiveClock(config.gateway.live_hz, config.gateway.pipeline_batch_s), address=address)
    if calibration is None and taken_on:  # not restored: taken on another sensor
        device.other_sensor = (f"sensor {address} is read as {name!r} now, and the calibration kept was taken on "
                               f"{taken_on}")
    device.saved, device.saved_request = device.pipeline.calibration, device.pipeline.request
    device.stopped_minute, device.stopped_at_s = load_stopped_minute(spool_dir, name) or (None, None)
    device.off_since_s = read_kept(spool_dir, name, OFF_SUFFIX, _put_down_s, "sensor off the body")
    device.last_activity = load_activity(spool_dir, name)
    device.sent_floor = SentFloor.load(spool_dir, name)
    _send_held(device, spool_dir)
    return device


def _send_held(device: Device, spool_dir: Path) -> None:
    """The minutes the last run had seen end but held back (the pipeline hands a minute out 6 s after its end), if it
    died before sending them: sent now, as it saw them at their end. A kill -9 in a minute's first 6 s lost the
    minute before it whole, for every sensor (an attack's probe: a gateway down 3.8 s, a full minute of 3 sensors
    missing), where a crash should cost only the samples of the minute it came in. That minute, as far as it was kept
    (_keep_held), goes out unfinished and is then the stopped minute: a crash costs at most OPEN_KEPT_EVERY_S of it."""
    name = device.publisher.device
    kept, in_progress = load_held_minutes(spool_dir, name) or ([], None)
    floor_s = device.sent_floor.kept_s if device.sent_floor is not None else None
    unsent = [m for m in kept if floor_s is None or m.minute_start_s + MINUTE_S > floor_s]
    # The minute it was in, as far as it was kept: sent unfinished, and then as a clean stop's (a start within it
    # adds to it). Not if a stop, or a lost link, sent more of it since (the floor is its last sample then).
    end_s = max(m.minute_start_s for m in unsent) + MINUTE_S if unsent else None
    unfinished = in_progress is not None and (floor_s is None or in_progress[1] > floor_s)
    if in_progress is not None and unfinished:
        unsent.append(in_progress[0])
        end_s = in_progress[1]  # as a stop's minute: the next run's samples in it are added to it
        device.stopped_minute, device.stopped_at_s = in_progress
        save_stopped_minute(spool_dir, name, *in_progress)
    if unsent and end_s is not None:
        log.warning("%s: %d minute(s) the last run had not sent (was it killed?): sent now%s", name, len(unsent),
                    ", the last unfinished" if unfinished else "")
        device.publisher.submit(list(unsent))
        if device.sent_floor is not None:
            device.sent_floor.sent(end_s)
            device.sent_floor.floor_s = max(end_s, device.sent_floor.floor_s or end_s)
    _forget_held(device, spool_dir)


def load_held_minutes(spool_dir: Path, device: str) -> tuple[list[MinuteMetrics], tuple[MinuteMetrics, float] | None] \
        | None:
    """The ended, held minutes the last run kept (_keep_held), each checked as any minute on the wire, and the minute
    it was in with its last sample (as a stopped minute is checked), if kept."""
    def checked(doc: dict[str, Any]) -> tuple[list[MinuteMetrics], tuple[MinuteMetrics, float] | None]:
        minutes = [MinuteMetrics(**m) for m in doc["minutes"]]
        for minute in minutes:
            parse("metrics", json.dumps(payload(device, minute)).encode(), load_validators())
        return minutes, checked_stopped_minute(device, doc["open"]) if doc.get("open") else None
    return read_kept(spool_dir, device, HELD_SUFFIX, checked, "minutes held and in progress at the last stop")


def _keep_held(device: Device, spool_dir: Path, now: bool = False) -> None:
    """The minutes that ended and are held back, on disk while they are (written when that set changes: about twice
    a minute), so that a crash loses none of a minute that is over; and the minute in progress, every
    OPEN_KEPT_EVERY_S, at its start and (now) after a batch that sent events, so that a crash loses at most that much
    of it, and no minute lacks what an event already sent put in it: a rotation counts in the minute it ends in, and
    kept only every 10 s a kill -9 4 s after one left its event stored and its minute without it (a chaos run: 17
    rotations stored, 15 in the minutes)."""
    held = device.pipeline.held_minutes()
    starts = [m.minute_start_s for m in held]
    last_t_s, kept_s = device.pipeline.last_t_s, device.open_kept_s
    due = last_t_s is not None and (now or kept_s is None or last_t_s - kept_s >= OPEN_KEPT_EVERY_S
                                    or kept_s < last_t_s // MINUTE_S * MINUTE_S)
    if starts == device.held_starts and not due:
        return
    in_progress = device.pipeline.open_minute()
    if not held and in_progress is None:
        if device.held_kept:  # else nothing to remove (off the body: every batch unlinked it, a review found)
            _forget_held(device, spool_dir)
        device.open_kept_s = last_t_s
        return
    # As they would go out: the last run's stop's part of its minute added (_continued; the pipeline's record lacks
    # it). Kept alone, a kill -9 after a restart within a minute had that run's part alone sent over the whole minute.
    earlier = device.stopped_minute

    def as_sent(m: MinuteMetrics) -> dict[str, Any]:
        return asdict(merge_minutes(earlier, m) if earlier is not None and m.minute_start_s == earlier.minute_start_s
                      else m)
    doc = {"minutes": [as_sent(m) for m in held],
           "open": {"minute": as_sent(in_progress), "last_t_s": last_t_s} if in_progress is not None else None}
    try:
        write_kept(spool_dir, device.publisher.device, HELD_SUFFIX, doc)
    except OSError as exc:  # the disk full: a crash now costs what it did before this file
        log.warning("%s: the minutes held not kept (a crash now loses them): %s", device.publisher.device, exc)
    else:
        device.held_kept = True
    device.held_starts, device.open_kept_s = starts, last_t_s


def _keep_activity(device: Device, spool_dir: Path, now: bool = False) -> None:
    """The activity classifier's state on disk, for the next start to go on from: at each change of sitting,
    standing or walking, every OPEN_KEPT_EVERY_S (data time: how long ago it held is the next start's to judge), and
    `now` (a stop). Started knowing nothing, a restarted gateway read a standing wearer sitting until they walked or sat
    down. Not while the sensor is off the body: the last kept goes stale by its time."""
    state, last_t_s = device.pipeline.activity_state(), device.pipeline.last_t_s
    if state is None or last_t_s is None:
        return
    kept = device.activity_kept
    if not (now or kept is None or last_t_s - kept[1] >= OPEN_KEPT_EVERY_S
            or (kept[0].upright, kept[0].walking) != (state.upright, state.walking)):
        return
    try:
        write_kept(spool_dir, device.publisher.device, ACTIVITY_SUFFIX, {**state.to_dict(), "t_s": last_t_s})
    except OSError as exc:  # the disk full: a restart now goes on from an older state, or none (sitting)
        log.warning("%s: the activity not kept: %s", device.publisher.device, exc)
    device.activity_kept = (state, last_t_s)  # tried again when due, as if kept: not at every batch


def _keep_gyro_bias(device: Device, spool_dir: Path, now: bool = False) -> None:
    """The orientation filter's gyro bias estimate on disk, for the next start's filter to begin with, as one run's
    keeps it across a lost link: every OPEN_KEPT_EVERY_S (data time) and `now` (a stop, a lost link). Started at zero,
    a restarted filter turned the heading at the bias about vertical until a rest of 3 s taught it again, and the facing
    direction found after the restart was where it had turned to (pipeline/orientation.py, GyroBias)."""
    bias, last_t_s = device.pipeline.gyro_bias(), device.pipeline.last_t_s
    if bias is None or last_t_s is None:
        return
    kept_s = device.gyro_bias_kept_s
    if not (now or kept_s is None or last_t_s - kept_s >= OPEN_KEPT_EVERY_S):
        return
    try:
        write_kept(spool_dir, device.publisher.device, GYRO_BIAS_SUFFIX,
                   {**bias.to_dict(), "sensor_address": device.address, "t_s": last_t_s})
    except OSError as exc:  # the disk full: a restart now begins with an older estimate, or none
        log.warning("%s: the gyro bias not kept: %s", device.publisher.device, exc)
    device.gyro_bias_kept_s = last_t_s  # tried again when due, as if kept: not at every batch


def load_gyro_bias(spool_dir: Path, device: str, address: str = "") -> GyroBias | None:
    """The last run's gyro bias estimate (_keep_gyro_bias), if learnt on this sensor (`address`; a sensor's bias is
    its own, as its calibration is)."""
    def read(doc: dict[str, Any]) -> GyroBias | None:
        bias, taken_on = GyroBias.from_dict(doc), doc.get("sensor_address")
        if isinstance(taken_on, str) and taken_on_another(taken_on, address):
            return None
        return bias
    return read_kept(spool_dir, device, GYRO_BIAS_SUFFIX, read, "gyro bias kept")


def load_activity(spool_dir: Path, device: str) -> tuple[ActivityState, float] | None:
    """The last run's activity state and the time of its sample (_keep_activity)."""
    def read(doc: dict[str, Any]) -> tuple[ActivityState, float]:
        t_s = float(doc["t_s"])
        if not math.isfinite(t_s):
            raise ValueError(f"t_s {t_s}")
        return ActivityState.from_dict(doc), t_s
    return read_kept(spool_dir, device, ACTIVITY_SUFFIX, read, "activity kept")


def _put_down_s(doc: dict[str, Any]) -> float:
    """The time kept in OFF_SUFFIX, checked: JSON's -Infinity would make a sensor "off for inf min" once picked up."""
    put_down_s = float(doc["put_down_s"])
    if not math.isfinite(put_down_s):
        raise ValueError(f"put_down_s {put_down_s}")
    return put_down_s


def _keep_off(device: Device, spool_dir: Path) -> None:
    """Where the sensor was put down, on disk while it is off the body, for a stop or a crash meanwhile."""
    off_since_s = device.pipeline.off_since_s
    if off_since_s == device.off_since_s:
        return
    try:
        if off_since_s is None:
            device_file(spool_dir, device.publisher.device, OFF_SUFFIX).unlink(missing_ok=True)
        else:
            write_kept(spool_dir, device.publisher.device, OFF_SUFFIX, {"put_down_s": off_since_s}, durable=True)
    except OSError as exc:  # the disk full: a restart while it lies there counts a minute of it as worn
        log.warning("%s: the sensor off the body not kept: %s", device.publisher.device, exc)
        return
    device.off_since_s = off_since_s


def _forget_held(device: Device, spool_dir: Path) -> None:
    try:
        device_file(spool_dir, device.publisher.device, HELD_SUFFIX).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("%s: the held minutes' file not removed: %s", device.publisher.device, exc)
    device.held_starts, device.open_kept_s, device.held_kept = [], None, False


def check_rate(name: str, profile: str | None, rate_hz: float) -> None:
    """A rate the sensor cannot stream is said at the start (ValueError), not after connecting: there it ended the
    sensor's link, silently, and the gateway ran on without its data."""
    if profile is not None:
        try:
            PROFILES[profile].rate_command(None, rate_hz)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc} (pipeline.rate_hz)") from None


def _restart_stopped_links(tasks: dict[str, asyncio.Task[None]], links: dict[str, SensorLink],
                           stopped_at: dict[str, float], stop: asyncio.Event) -> None:
    """A link's task that ended on an error is said once, and started again LINK_RESTART_S later."""
    for name, task in tasks.items():
        if not task.done() or stop.is_set():
            continue
        if name not in stopped_at:
            stopped_at[name] = time.monotonic()
            exc = None if task.cancelled() else task.exception()
            log.error("%s: the sensor's link stopped (%s); started again in %.0f s", name,
                      f"{type(exc).__name__}: {exc}" if exc else "no error", LINK_RESTART_S, exc_info=exc)
        elif time.monotonic() - stopped_at[name] >= LINK_RESTART_S:
            del stopped_at[name]
            tasks[name] = asyncio.create_task(links[name].run(stop))


def load_calibration(spool_dir: Path, device: str
                     ) -> tuple[Calibration, str | None, CalibrationRequest | None] | None:
    """The device's calibration from the last run (a restarted gateway measures at once), the address of the
    sensor it was taken on (None if not said: kept before it was), and the moves asked for under it and not made yet
    (None: none, or kept before they were)."""
    def read(doc: dict[str, Any]) -> tuple[Calibration, str | None, CalibrationRequest | None]:
        taken_on, request = doc.get("sensor_address"), doc.get("request")
        return (Calibration.from_dict(doc), taken_on if isinstance(taken_on, str) and taken_on else None,
                None if request is None else CalibrationRequest.from_dict(request))
    return read_kept(spool_dir, device, ".calibration.json", read, "stored calibration")


def save_calibration(spool_dir: Path, device: str, calibration: Calibration, address: str = "",
                     request: CalibrationRequest | None = None) -> None:
    """With the sensor's address: another sensor under the same id (the same name) must not be measured with it; and
    the moves asked for under it (`request`): a restarted pipeline watches for them still (a request told at 21:00, a
    restart at 21:05: the moves made at 21:10 were unseen, and nobody answered the wearer)."""
    write_kept(spool_dir, device, ".calibration.json",
               {**calibration.to_dict(), **({"sensor_address": address} if address else {}),
                **({"request": request.to_dict()} if request is not None else {})}, durable=True)


def load_stopped_minute(spool_dir: Path, device: str) -> tuple[MinuteMetrics, float] | None:
    """The minute the last clean stop sent unfinished, and its last sample's time (save_stopped_minute)."""
    return read_kept(spool_dir, device, ".minute.json", lambda doc: checked_stopped_minute(device, doc),
                     "stopped minute")


def checked_stopped_minute(device: str, doc: dict[str, Any]) -> tuple[MinuteMetrics, float]:
    """A stopped minute kept beside the spool (`{"minute": …, "last_t_s": …}`), checked: ValueError if it cannot be."""
    minute, last_t_s = MinuteMetrics(**doc["minute"]), float(doc["last_t_s"])
    # As any minute on the wire (a hand-edited or damaged file must not make every batch's merge fail).
    parse("metrics", json.dumps(payload(device, minute)).encode(), load_validators())
    if not minute.minute_start_s <= last_t_s < minute.minute_start_s + MINUTE_S:
        raise ValueError(f"last_t_s {last_t_s} is not in the minute")
    # Seconds are samples × the nominal period: 5 % for a sensor clock that runs fast, 1 s for gaps bridged.
    seen_s = (last_t_s - minute.minute_start_s) * 1.05 + 1.0
    if over := [name for name in SECONDS_IN_MINUTE if getattr(minute, name) > seen_s]:
        raise ValueError(f"{', '.join(over)} longer than the {seen_s:.1f} s up to last_t_s")
    if minute.sitting_since_s is not None and minute.sitting_since_s > last_t_s:
        raise ValueError(f"sitting_since_s {minute.sitting_since_s} is after last_t_s")
    return minute, last_t_s


def save_stopped_minute(spool_dir: Path, device: str, minute: MinuteMetrics, last_t_s: float) -> None:
    """A failure costs what it did before this file existed: a start within the minute replaces its first part."""
    try:
        write_kept(spool_dir, device, ".minute.json", {"minute": asdict(minute), "last_t_s": last_t_s})
    except OSError as exc:
        log.warning("%s: the unfinished minute not saved (a start within it replaces its first part): %s", device,
                    exc)


def forget_stopped_minute(spool_dir: Path, device: str) -> None:
    """Used up once this run sent that minute whole (or has nothing to add to it): after a crash of this run the
    next start must not resume a sitting stretch this run may have seen end, nor add to a minute it sent since. Kept
    until then, so that a crash and a start within that minute still add to its first part, not replace it."""
    try:
        device_file(spool_dir, device, ".minute.json").unlink(missing_ok=True)
    except OSError as exc:
        log.warning("%s: the stopped minute's file not removed (a crash now would resume from it): %s", device, exc)


def _continued(device: Device, metrics: list[MinuteMetrics]) -> list[MinuteMetrics]:
    """Metrics with the minute the last run's stop sent unfinished made whole: the alert service keeps the last
    record of a minute and InfluxDB the newest value of each field, so this run's part alone would replace the
    first part (a helper's probe of restarts within a minute: 8 minutes lost 196.8 worn seconds)."""
    earlier = device.stopped_minute
    if earlier is None or not metrics:
        return metrics
    if max(m.minute_start_s for m in metrics) >= earlier.minute_start_s:  # that minute goes now, or is past
        device.stopped_minute = None
    return [merge_minutes(earlier, m) if m.minute_start_s == earlier.minute_start_s else m for m in metrics]


def _save(device: Device, spool_dir: Path) -> None:
    """The current calibration, with the moves asked for under it, to disk if it is not there yet (a request made or
    answered writes it too). A failure (the disk full) costs only a restart's measuring at once (or its watching for
    the moves): logged once, and tried again with the next batch."""
    calibration, request = device.pipeline.calibration, device.pipeline.request
    if calibration is None or (calibration is device.saved and request is device.saved_request):
        return
    try:
        save_calibration(spool_dir, device.publisher.device, calibration, device.address, request)
    except OSError as exc:
        if not device.save_failed:
            log.warning("%s: calibration not saved (a restart will not restore it): %s", device.publisher.device, exc)
        device.save_failed = True
        return
    if device.save_failed:
        log.warning("%s: calibration saved", device.publisher.device)
    device.saved, device.saved_request, device.save_failed = calibration, request, False


def _consumer(device: Device, spool_dir: Path, publish_imu: bool) -> Callable[[ImuBatch], None]:
    def on_batch(batch: ImuBatch) -> None:
        if device.address and batch.device.upper() != device.address.upper():
            _sensor_replaced(device, spool_dir, batch.device)
        device.rx_s, device.link_gone = time.monotonic(), False
        device.window[0] += batch.n
        device.window[1] += batch.lost_before
        if device.sent_floor is not None and (admitted := device.sent_floor.admit(batch)) is not batch:
            if admitted is None:
                return
            batch = admitted
        if not device.collector.held:
            device.held_since_s = time.monotonic()
        if (ready := device.collector.add(batch)) is not None:
            _process(device, spool_dir, ready)
        if publish_imu:
            device.publisher.publish_imu(batch.t_s, batch.acc_g, batch.gyro_dps)
    return on_batch


def _sensor_replaced(device: Device, spool_dir: Path, address: str) -> None:
    """The link reads another sensor under this device's name (the one it read was replaced): what the old one left
    open goes out, and the new one starts as at a gateway's start on another sensor of the name: uncalibrated, the
    wearer asked for the moves (the old sensor's calibration is another mounting), its part of the minute added to the
    old one's. Before, the new sensor was not read at all until the gateway was restarted."""
    name = device.publisher.device
    log.warning("%s: sensor %s is read as %r now, in place of %s: the calibration is not used on it; calibrate again",
                name, address, name, device.address)
    if (held := device.collector.take()) is not None:  # the old sensor's last samples, measured as it was
        _process(device, spool_dir, held)
    if device.pipeline.last_t_s is not None and not device.link_gone:
        try:
            out = device.pipeline.link_lost()
        except Exception:  # a bug must cost the old sensor's open minute, not the new sensor's data
            log.exception("%s: the pipeline failed to close what the replaced sensor left open", name)
        else:
            _submit(device, spool_dir, out.events, out.metrics, handed=True)
    pipeline = PosturePipeline(device.pipeline.s)
    device.other_sensor = f"sensor {address} is read as {name!r} now, in place of {device.address}"
    device.pipeline, device.address, device.saved, device.saved_request, device.link_gone, device.gone_kept = \
        pipeline, address, None, None, False, False
    device.gyro_bias_kept_s = None  # the new sensor's is kept from its first batch on
    _keep_off(device, spool_dir)  # the new pipeline is not off: the old sensor's time off is forgotten
    device.stopped_minute, device.stopped_at_s = load_stopped_minute(spool_dir, name) or (None, None)


def last_sample_kept(device: Device) -> float | None:
    """The last run's last sample as its kept files show it (before this run's first sample looks at them): the
    activity state's time (kept every OPEN_KEPT_EVERY_S, at a stop and when the link is lost) or the stopped minute's
    last sample, whichever is later; None if neither was kept."""
    activity_t_s = None if device.last_activity is None else device.last_activity[1]
    times = [t for t in (device.stopped_at_s, activity_t_s) if t is not None]
    return max(times) if times else None


def go_on_from_stop(device: Device, first_t_s: float) -> None:
    """This run's first sample: after the last run's stop, its sitting stretch goes on (as across a gap of that
    length within one run), and within the stop's minute that minute's part is added to the stop's (_continued);
    a host clock set back since leaves both."""
    if device.stopped_minute is not None and device.stopped_at_s is not None and device.stopped_at_s < first_t_s:
        device.pipeline.minutes.resume(device.stopped_minute.sitting_since_s, device.stopped_at_s)
        if first_t_s < device.stopped_minute.minute_start_s + MINUTE_S:
            device.stopped_at_s = None
            return
    device.stopped_minute = device.stopped_at_s = None


def _process(device: Device, spool_dir: Path, batch: ImuBatch) -> None:
    if device.pipeline.last_t_s is None:  # this run's first samples
        if device.off_since_s is not None and device.off_since_s <= float(batch.t_s[0]):
            device.pipeline.resume_off(device.off_since_s)  # the last run's sensor lay off the body: still off
        elif (last_t_s := last_sample_kept(device)) is not None:  # how long unseen: a night asks for the moves
            device.pipeline.resume_after(last_t_s)
        if device.stopped_at_s is not None:
            go_on_from_stop(device, float(batch.t_s[0]))
        if device.stopped_minute is None:  # nothing to add to: used up
            forget_stopped_minute(spool_dir, device.publisher.device)
        if device.last_activity is not None:
            if device.pipeline.off_since_s is None:  # off the body: unseen until picked up, as within one run
                kept, kept_t_s = device.last_activity
                device.pipeline.activity.go_on(kept, float(batch.t_s[0]) - kept_t_s)
            device.last_activity = None
    try:
        out = device.pipeline.update(batch.t_s, batch.acc_g, batch.gyro_dps, batch.lost_before)
    except Exception:  # a bug must cost this batch, not the other sensors or the process
        log.exception("%s: the pipeline failed on a batch of %d samples; skipped", device.publisher.device, batch.n)
        return
    if device.other_sensor is not None:  # the wearer is told, as when the calibration check asks for the moves
        out.events.insert(0, asking(float(batch.t_s[0]), "recalibrate", device.other_sensor,
                                    device.pipeline.s.calibration.instructions, "; then "))
        device.other_sensor = None
    _save(device, spool_dir)
    _submit(device, spool_dir, out.events, out.metrics)
    _keep_held(device, spool_dir, now=bool(out.events))
    _keep_activity(device, spool_dir)
    _keep_gyro_bias(device, spool_dir)
    _keep_off(device, spool_dir)
    # The batch's latest sample, at most once per 1/live_hz of sensor time: what the wearer is doing now; with
    # more than one state due in a batch, the earlier ones ride along in the same message (one message a batch).
    if (state := live_message(device.pipeline.live_state(), device.live_clock, out.t_s, out.flexion_deg,
                              out.lateral_deg, out.rotation_deg)) is not None:
        device.publisher.publish_live(state)


def _submit(device: Device, spool_dir: Path, events: list[Any], metrics: list[MinuteMetrics],
            handed: bool = False) -> None:
    if not (events or metrics):
        return
    stopped = device.stopped_minute
    sent = _continued(device, metrics)
    device.publisher.submit([*events, *sent])
    _sent(device, metrics)
    if handed and sent and (last_t_s := device.pipeline.last_t_s) is not None:
        # The minute the link was lost in went out unfinished: kept as a clean stop keeps its minute, so that a stop
        # or a crash while the sensor is away and a start within that minute add to it (they replaced it); and the
        # last run's part of it, if any, is added again to the rest of it (the pipeline's record of it lacks that).
        save_stopped_minute(spool_dir, device.publisher.device, sent[-1], last_t_s)
        device.gone_kept = True
        if stopped is not None and stopped.minute_start_s == sent[-1].minute_start_s:
            device.stopped_minute = stopped
    elif (stopped is not None or device.gone_kept) and metrics and device.stopped_minute is None:
        forget_stopped_minute(spool_dir, device.publisher.device)  # the minute went out whole, or is past: used up
        device.gone_kept = False
    if metrics and device.held_starts:
        _keep_held(device, spool_dir)  # those handed out are no longer held


def _close_when_gone(device: Device, spool_dir: Path, notified_s: float = 0.0) -> None:
    """A sensor silent for LINK_GONE_S (out of range, off): its open episodes and minutes go out now, not when it is
    back (a helper's wearer away 5 min: the minute they left in, slouching, came 295 s late; killed meanwhile, lost).
    Silent means no notification (notified_s, monotonic) as well as no batch: an arrival-timed sensor's backlog after a
    host stall is held back from the pipeline while its notifications still come."""
    if device.link_gone or device.pipeline.last_t_s is None or device.collector.held:
        return
    if time.monotonic() - max(device.rx_s, notified_s) >= LINK_GONE_S:
        device.link_gone = True
        try:
            out = device.pipeline.link_lost()
        except Exception:  # a bug must cost this device's open minute, not the other sensors or the process
            log.exception("%s: the pipeline failed to close what was open for a silent sensor", device.publisher.device)
            return
        _submit(device, spool_dir, out.events, out.metrics, handed=True)
        _keep_activity(device, spool_dir, now=True)  # as at the last sample, for a restart while it is away
        _keep_gyro_bias(device, spool_dir, now=True)


def _sent(device: Device, metrics: list[MinuteMetrics]) -> None:
    """The floor: the end of the minutes sent, or the last sample in them if that is earlier (a minute sent
    unfinished: a stop's, a lost link's), so that no sample of a minute sent passes it, and a start's go on after it."""
    if metrics and device.sent_floor is not None:
        end_s = max(m.minute_start_s for m in metrics) + MINUTE_S
        last_t_s = device.pipeline.last_t_s
        device.sent_floor.sent(end_s if last_t_s is None else min(end_s, last_t_s))


def _status(device: Device, link: SensorLink) -> Status:
    stats = link.stats
    received, lost = device.window
    quality = 100.0 * received / (received + lost) if received + lost else None
    if stats is None:
        return Status(online=False)
    return Status(online=link.connected.is_set(), battery_pct=stats.battery_pct, link_quality_pct=quality,
                  lost_samples=stats.lost_samples, malformed_packets=stats.malformed_total,
                  duplicate_packets=stats.duplicates, reconnects=stats.reconnects,
                  discarded_samples=device.pipeline.samples_discarded)


async def _flush(devices: dict[str, Device], spool_dir: Path) -> None:
    """The last, unfinished minute, then wait a little for the broker to take the backlog."""
    for d in devices.values():
        if (held := d.collector.take()) is not None:
            _process(d, spool_dir, held)
        try:
            final = d.pipeline.finish()
        except Exception:
            log.exception("%s: the pipeline failed to finish", d.publisher.device)
            continue
        metrics = _continued(d, final.metrics)
        d.publisher.submit([*final.events, *metrics])
        _sent(d, metrics)
        if metrics and (last_t_s := d.pipeline.last_t_s) is not None:  # the stop's minute: a start within it adds
            save_stopped_minute(spool_dir, d.publisher.device, metrics[-1], last_t_s)
        _keep_activity(d, spool_dir, now=True)
        _keep_gyro_bias(d, spool_dir, now=True)
    deadline = time.monotonic() + FINAL_FLUSH_S
    while time.monotonic() < deadline and any(d.publisher.backlog for d in devices.values()):
        for d in devices.values():
            d.publisher.pump()
        await asyncio.sleep(PUMP_INTERVAL_S)
    for d in devices.values():
        d.publisher.stop()
