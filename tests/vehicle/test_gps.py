from __future__ import annotations

import os
import termios
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from edge.config import GpsConfig
from edge.types import Position
from edge.vehicle.gps.clock import clock_synchronised
from edge.vehicle.gps.gpsd import parse_gpsd_line
from edge.vehicle.gps.nmea import NmeaChecksumError, NmeaDecoder, NmeaError, parse_nmea
from edge.vehicle.gps.receiver import GpsReceiver
from edge.vehicle.gps.track import GpsFileError, PositionTrack
from tests.fakegpsd import FakeGpsd, tpv

T0 = datetime(2026, 3, 15, 8, 0, 0, tzinfo=UTC)
WAIT = 10.0


def nmea(body: str) -> str:
    """A sentence with its checksum, computed here independently of edge.vehicle.gps."""
    checksum = 0
    for byte in body.encode("ascii"):
        checksum ^= byte
    return f"${body}*{checksum:02X}"


def bad_checksum(sentence: str) -> str:
    """The sentence with every bit of its checksum flipped."""
    return f"{sentence[:-2]}{int(sentence[-2:], 16) ^ 0xFF:02X}"


def nmea_time(moment: datetime) -> tuple[str, str]:
    """(hhmmss.ss, ddmmyy) for a moment."""
    m = moment.astimezone(UTC)
    return f"{m:%H%M%S}.{m.microsecond // 10000:02d}", f"{m:%d%m%y}"


def rmc(moment: datetime, lat: str, lon: str, speed_kn: str = "", course: str = "") -> str:
    hms, dmy = nmea_time(moment)
    return nmea(f"GPRMC,{hms},A,{lat},{lon},{speed_kn},{course},{dmy},,,A")


def gga(moment: datetime, lat: str, lon: str, quality: str = "1") -> str:
    hms, _ = nmea_time(moment)
    return nmea(f"GPGGA,{hms},{lat},{lon},{quality},08,0.9,12.0,M,2.0,M,,")


# --- NMEA ------------------------------------------------------------------------------


def test_checksum_is_verified():
    good = nmea("GPRMC,081500.00,A,2217.1234,N,11410.5678,E,10.0,90.5,150326,,,A")
    assert parse_nmea(good) is not None
    assert parse_nmea(good[:-2] + good[-2:].lower()) is not None  # hex digits in any case
    with pytest.raises(NmeaChecksumError):
        parse_nmea(bad_checksum(good))
    with pytest.raises(NmeaChecksumError):
        parse_nmea(good.split("*")[0])
    # One flipped character in the body: the checksum no longer matches.
    with pytest.raises(NmeaChecksumError):
        parse_nmea(good.replace("2217.1234", "2217.1235"))


def test_rmc_north_east():
    s = parse_nmea(nmea("GPRMC,081500.00,A,2217.1234,N,11410.5678,E,10.0,90.5,150326,,,A"))
    assert s is not None and s.kind == "RMC" and s.talker == "GP" and s.valid
    assert s.date == date(2026, 3, 15)
    assert s.time_of_day == time(8, 15, 0, tzinfo=UTC)
    assert s.lat == pytest.approx(22.28539, abs=1e-9)
    assert s.lon == pytest.approx(114.17613, abs=1e-9)
    assert s.speed_kmh == pytest.approx(18.52)
    assert s.heading == pytest.approx(90.5)


def test_rmc_south_west_other_talker_and_empty_fields():
    s = parse_nmea(nmea("GNRMC,235959.50,A,3351.0000,S,15112.0000,W,,,311225,,,D"))
    assert s is not None and s.talker == "GN" and s.valid
    assert s.lat == pytest.approx(-33.85) and s.lon == pytest.approx(-151.2)
    assert s.heading is None and s.speed_kmh is None
    assert s.time_of_day == time(23, 59, 59, 500000, tzinfo=UTC)


def test_no_fix_sentences_are_not_fixes():
    v = parse_nmea(nmea("GPRMC,081500.00,V,,,,,,,150326,,,N"))
    assert v is not None and not v.valid and v.lat is None
    # Status A but FAA mode N (NMEA 2.3): not valid either.
    n = parse_nmea(nmea("GPRMC,081500.00,A,2217.1234,N,11410.5678,E,0,0,150326,,,N"))
    assert n is not None and not n.valid
    q0 = parse_nmea(nmea("GPGGA,081500.00,,,,,0,00,99.9,,,,,,"))
    assert q0 is not None and q0.kind == "GGA" and not q0.valid
    decoder = NmeaDecoder()
    received = T0
    assert decoder.feed(nmea("GPRMC,081500.00,V,,,,,,,150326,,,N"), received) is None
    assert decoder.feed(nmea("GPGGA,081500.00,,,,,0,00,99.9,,,,,,"), received) is None
    assert decoder.errors == {"checksum": 0, "malformed": 0}


def test_gga_and_other_sentences():
    s = parse_nmea(nmea("GLGGA,120000,4807.0380,N,01131.0000,E,2,08,0.9,545.4,M,46.9,M,,"))
    assert s is not None and s.kind == "GGA" and s.talker == "GL" and s.valid
    assert s.date is None and s.time_of_day == time(12, 0, 0, tzinfo=UTC)
    assert s.lat == pytest.approx(48.1173) and s.lon == pytest.approx(11.516666667)
    assert s.heading is None and s.speed_kmh is None
    assert parse_nmea(nmea("GPGSV,3,1,11,03,03,111,00")) is None
    assert parse_nmea(nmea("PGRME,15.0,M,45.0,M,25.0,M")) is None
    assert parse_nmea("   ") is None


@pytest.mark.parametrize(
    "body",
    [
        "GPRMC,081500.00,A,9100.0000,N,11410.5678,E,,,150326,,,A",  # latitude > 90
        "GPRMC,081500.00,A,2260.0000,N,11410.5678,E,,,150326,,,A",  # 60 minutes
        "GPRMC,081500.00,A,2217.1234,X,11410.5678,E,,,150326,,,A",  # hemisphere
        "GPRMC,081500.00,A,,,,,,,150326,,,A",  # a fix without a position
        "GPRMC,081500.00,A,2217.1234,N,11410.5678,E,,,320326,,,A",  # 32 March
        "GPRMC,256000.00,A,2217.1234,N,11410.5678,E,,,150326,,,A",  # hour 25
        "GPRMC,081500.00,A,2217.1234,N",  # truncated
        "GPGGA,081500.00,2217.1234,N,11410.5678,E,x,08",  # quality not a number
    ],
)
def test_malformed_sentences(body):
    with pytest.raises(NmeaError) as info:
        parse_nmea(nmea(body))
    assert not isinstance(info.value, NmeaChecksumError)


def test_decoder_dates_gga_with_midnight_rollover_and_counts_errors():
    decoder = NmeaDecoder()
    received = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    first = decoder.feed(nmea("GNRMC,235959.50,A,3351.0000,S,15112.0000,W,,,311225,,,A"), received)
    assert first is not None and first.dated
    assert first.position.fix_time == datetime(2025, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    after = decoder.feed(nmea("GPGGA,000000.50,3351.0000,S,15112.0000,W,1,08,0.9,,,,,,"), received)
    assert after is not None and after.dated
    assert after.position.fix_time == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert after.position.lat == pytest.approx(-33.85)
    # GGA-only runs keep rolling: the day carries on from the last GGA.
    later = decoder.feed(nmea("GPGGA,000001.50,3351.0000,S,15112.0000,W,1,08,0.9,,,,,,"), received)
    assert later is not None
    assert later.position.fix_time.date() == date(2026, 1, 1)
    assert decoder.feed(bad_checksum(nmea("GPGGA,garbage")), received) is None
    assert decoder.feed("no dollar at all", received) is None
    assert decoder.feed(nmea("GPRMC,081500.00,A,9100.0,N,1.0,E,,,150326,,,A"), received) is None
    assert decoder.errors == {"checksum": 1, "malformed": 2}


def test_gga_before_any_rmc_takes_the_receive_date():
    decoder = NmeaDecoder()
    # Received just after midnight; the GGA is from just before: the previous day.
    received = datetime(2026, 3, 16, 0, 0, 1, tzinfo=UTC)
    fix = decoder.feed(nmea("GPGGA,235959.00,2217.1234,N,11410.5678,E,1,08,0.9,,,,,,"), received)
    assert fix is not None and not fix.dated
    assert fix.position.fix_time == datetime(2026, 3, 15, 23, 59, 59, tzinfo=UTC)
    assert decoder.feed(nmea("GPGGA,235959.00,2217.1234,N,11410.5678,E,1,08,0.9,,,,,,")) is None


# --- gpsd protocol ----------------------------------------------------------------------


def test_parse_gpsd_lines():
    import json

    received = T0 + timedelta(seconds=0.3)
    fix = parse_gpsd_line(json.dumps(tpv(T0, 22.3, 114.17, track=370.0, speed=10.0)), received)
    assert fix is not None and fix.dated
    p = fix.position
    assert (p.lat, p.lon, p.fix_time) == (22.3, 114.17, T0)
    assert p.heading == pytest.approx(10.0) and p.speed_kmh == pytest.approx(36.0)
    untimed = parse_gpsd_line(json.dumps(tpv(None, 22.3, 114.17, mode=2)), received)
    assert untimed is not None and not untimed.dated and untimed.position.fix_time == received
    assert parse_gpsd_line(json.dumps(tpv(T0, mode=1)), received) is None
    assert parse_gpsd_line('{"class":"SKY","satellites":[]}', received) is None
    for bad in ("not json", "[1, 2]", json.dumps(tpv(T0, mode=3)), '{"class":"TPV","mode":"3"}'):
        with pytest.raises(ValueError):
            parse_gpsd_line(bad, received)
    with pytest.raises(ValueError):
        parse_gpsd_line(json.dumps(tpv(T0, 95.0, 0.0)), received)


# --- live receiver: gpsd ----------------------------------------------------------------


@pytest.fixture
def gpsd():
    with FakeGpsd() as server:
        yield server


def gpsd_receiver(server: FakeGpsd, max_age: float = 2.0) -> GpsReceiver:
    config = GpsConfig(
        source="gpsd", host="127.0.0.1", port=server.port, max_fix_age_seconds=max_age
    )
    return GpsReceiver(config, reconnect_min_s=0.05, reconnect_max_s=0.2)


def test_receiver_from_gpsd_picks_nearest_fix(gpsd):
    receiver = gpsd_receiver(gpsd)
    assert receiver.status()["state"] == "disconnected"
    with receiver:
        assert gpsd.wait_watching(1, WAIT)
        assert gpsd.commands[0] == '?WATCH={"enable":true,"json":true}'
        assert receiver.wait_for(lambda: receiver.status()["state"] == "no-fix", WAIT)
        now = datetime.now(UTC)
        gpsd.send(
            '{"class":"SKY","satellites":[]}',
            "this is not json",
            tpv(now - timedelta(seconds=5), mode=1),
        )
        gpsd.send(
            *(
                tpv(now - timedelta(seconds=3 - i), 22.30 + i * 0.001, 114.17, track=45, speed=10)
                for i in range(4)
            )
        )
        assert receiver.wait_for(lambda: receiver.fixes >= 4, WAIT)
        nearest = receiver.position_at(now - timedelta(seconds=1.9))
        assert nearest is not None and not nearest.stale
        assert nearest.position.lat == pytest.approx(22.301)
        assert nearest.position.fix_time == (now - timedelta(seconds=2)).replace(
            microsecond=(now - timedelta(seconds=2)).microsecond // 1000 * 1000
        )
        assert nearest.age_s == pytest.approx(0.1, abs=0.002)
        assert nearest.position.speed_kmh == pytest.approx(36.0)
        assert nearest.position.heading == pytest.approx(45.0)
        # A read long after the last fix gets the last fix, flagged stale.
        late = receiver.position_at(now + timedelta(seconds=10))
        assert late is not None and late.stale and late.age_s == pytest.approx(10.0, abs=0.002)
        assert late.position.lat == pytest.approx(22.303)
        status = receiver.status()
        assert status["source"] == "gpsd"
        assert status["state"] == "fix"
        assert status["lat"] == pytest.approx(22.303) and status["lon"] == pytest.approx(114.17)
        assert status["last_fix"].endswith("Z") and status["age_s"] < 2.0
        assert status["errors"] == {"checksum": 0, "malformed": 1, "connection": 0}
    assert receiver.status()["state"] == "disconnected"


def test_receiver_flags_an_old_fix_stale(gpsd):
    receiver = gpsd_receiver(gpsd, max_age=2.0)
    with receiver:
        assert gpsd.wait_watching(1, WAIT)
        old = datetime.now(UTC) - timedelta(seconds=30)
        gpsd.send(tpv(old, -33.85, 151.2))
        assert receiver.wait_for(lambda: receiver.fixes >= 1, WAIT)
        fix = receiver.position_at()
        assert fix is not None and fix.stale and fix.age_s == pytest.approx(30.0, abs=2.0)
        status = receiver.status()
        assert status["state"] == "stale" and status["age_s"] >= 29.0
        assert status["lat"] == pytest.approx(-33.85)


def test_receiver_reconnects_after_gpsd_drops(gpsd):
    receiver = gpsd_receiver(gpsd)
    with receiver:
        assert gpsd.wait_watching(1, WAIT)
        now = datetime.now(UTC)
        gpsd.send(tpv(now - timedelta(seconds=1), 22.3, 114.17))
        assert receiver.wait_for(lambda: receiver.fixes >= 1, WAIT)
        gpsd.drop()
        assert gpsd.wait_watching(2, WAIT), "the receiver did not reconnect"
        # The receiver sends ?WATCH while opening and counts the connection after:
        # the fake gpsd can see the watch first.
        assert receiver.wait_for(lambda: receiver.connects == 2, WAIT)
        assert receiver.status()["errors"]["connection"] >= 1
        assert "closed" in (receiver.status()["last_error"] or "")
        gpsd.send(tpv(now, 22.31, 114.17))
        assert receiver.wait_for(lambda: receiver.fixes >= 2, WAIT)
        fix = receiver.position_at(now)
        assert fix is not None and fix.position.lat == pytest.approx(22.31)
        assert receiver.status()["state"] == "fix"


def test_receiver_without_gpsd_is_disconnected():
    server = FakeGpsd()
    port = server.port
    server.close()  # nothing listens on the port now
    receiver = GpsReceiver(
        GpsConfig(source="gpsd", host="127.0.0.1", port=port),
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    with receiver:
        assert receiver.wait_for(lambda: receiver.status()["errors"]["connection"] >= 2, WAIT)
        status = receiver.status()
        assert status["state"] == "disconnected"
        assert status["last_fix"] is None and status["lat"] is None
        assert "refused" in status["last_error"].lower()
        assert receiver.position_at() is None
    assert receiver.stop()


def test_receiver_off():
    receiver = GpsReceiver(GpsConfig(source="none"))
    with receiver:
        assert receiver.position_at(T0) is None
        assert receiver.status() == {
            "source": "none",
            "state": "off",
            "last_fix": None,
            "age_s": None,
            "lat": None,
            "lon": None,
            "errors": {"checksum": 0, "malformed": 0, "connection": 0},
            "last_error": None,
        }
    assert receiver.stop()


# --- live receiver: NMEA serial device (pseudo-terminal) --------------------------------


def open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    try:
        attrs = termios.tcgetattr(slave)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except termios.error as exc:
        os.close(master)
        os.close(slave)
        pytest.skip(f"termios does not work on a pseudo-terminal here: {exc}")
    return master, slave, name


def test_receiver_reads_nmea_from_a_serial_device(tmp_path: Path):
    master, slave, name = open_pty()
    link = tmp_path / "gps0"  # like a udev /dev/serial/by-id link
    link.symlink_to(name)
    config = GpsConfig(source="nmea", device=str(link), baud=9600, max_fix_age_seconds=3.0)
    receiver = GpsReceiver(config, reconnect_min_s=0.05, reconnect_max_s=0.2)
    try:
        with receiver:
            assert receiver.wait_for(lambda: receiver.status()["state"] == "no-fix", WAIT)
            attrs = termios.tcgetattr(slave)
            assert not attrs[3] & (termios.ICANON | termios.ECHO)  # raw mode was set
            assert attrs[4] == termios.B9600
            now = datetime.now(UTC).replace(microsecond=0)
            lines = [
                bad_checksum(nmea("GPRMC,garbled")),
                rmc(now - timedelta(seconds=1), "2217.1234,N", "11410.5678,E", "10.0", "90.0"),
                gga(now - timedelta(seconds=1), "2217.1234,N", "11410.5678,E"),
                rmc(now, "2217.1300,N", "11410.5678,E", "12.0", "91.0"),
            ]
            os.write(master, ("\r\n".join(lines) + "\r\n").encode())
            assert receiver.wait_for(lambda: receiver.fixes >= 3, WAIT)
            fix = receiver.position_at(now - timedelta(seconds=0.8))
            assert fix is not None and not fix.stale
            assert fix.age_s == pytest.approx(0.2, abs=1e-3)
            # RMC and GGA of one epoch are one fix, with RMC's speed and course.
            assert fix.position.lat == pytest.approx(22.28539)
            assert fix.position.speed_kmh == pytest.approx(18.52)
            assert fix.position.heading == pytest.approx(90.0)
            status = receiver.status()
            assert status["source"] == "nmea" and status["state"] == "fix"
            assert status["errors"]["checksum"] == 1
            assert status["lat"] == pytest.approx(22.2855, abs=1e-6)

            # The receiver is unplugged: the pty goes away; it comes back elsewhere and
            # the link is moved, as udev would.
            os.close(master)
            os.close(slave)
            master = slave = -1
            assert receiver.wait_for(lambda: receiver.status()["state"] == "disconnected", WAIT)
            master, slave, name = open_pty()
            link.unlink()
            link.symlink_to(name)
            assert receiver.wait_for(lambda: receiver.connects >= 2, WAIT)
            assert receiver.wait_for(lambda: receiver.status()["state"] != "disconnected", WAIT)
            later = now + timedelta(seconds=1)
            os.write(master, (rmc(later, "2217.1400,N", "11410.5678,E") + "\r\n").encode())
            assert receiver.wait_for(lambda: receiver.fixes >= 4, WAIT)
            newest = receiver.position_at(later)
            assert newest is not None and newest.age_s == 0.0
            assert newest.position.lat == pytest.approx(22 + 17.14 / 60)
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)


def test_receiver_reports_a_missing_device(tmp_path: Path):
    config = GpsConfig(source="nmea", device=str(tmp_path / "ttyNONE"))
    receiver = GpsReceiver(config, reconnect_min_s=0.05, reconnect_max_s=0.1)
    with receiver:
        assert receiver.wait_for(lambda: receiver.status()["errors"]["connection"] >= 1, WAIT)
        status = receiver.status()
        assert status["state"] == "disconnected"
        assert "does not exist" in status["last_error"]


def test_receiver_rejects_a_file_that_is_not_a_tty(tmp_path: Path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x\n")
    receiver = GpsReceiver(
        GpsConfig(source="nmea", device=str(plain)), reconnect_min_s=0.05, reconnect_max_s=0.1
    )
    with receiver:
        assert receiver.wait_for(lambda: receiver.status()["errors"]["connection"] >= 1, WAIT)
        assert "not a usable serial device" in receiver.status()["last_error"]


# --- recorded tracks --------------------------------------------------------------------

# A short drive: 10 s north (0.001 degrees), then 10 s east (0.001 degrees).
DRIVE = [
    (T0, 22.300, 114.170),
    (T0 + timedelta(seconds=10), 22.301, 114.170),
    (T0 + timedelta(seconds=20), 22.301, 114.171),
]


def gpx_text(extensions: bool = True, reverse: bool = False) -> str:
    points = []
    for i, (moment, lat, lon) in enumerate(DRIVE):
        extra = ""
        if extensions and i == 0:
            extra = "<extensions><tpx:TrackPointExtension><tpx:course>350</tpx:course>"
            extra += "<tpx:speed>10</tpx:speed></tpx:TrackPointExtension></extensions>"
        elif extensions and i == 1:
            extra = "<extensions><tpx:TrackPointExtension><tpx:course>10</tpx:course>"
            extra += "<tpx:speed>12</tpx:speed></tpx:TrackPointExtension></extensions>"
        stamp = moment.isoformat().replace("+00:00", "Z")
        points.append(
            f'<trkpt lat="{lat}" lon="{lon}"><ele>5</ele><time>{stamp}</time>{extra}</trkpt>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1" '
        'xmlns:tpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v2">\n'
        "<trk><name>drive</name><trkseg>\n"
        + "\n".join(reversed(points) if reverse else points)
        + "\n</trkseg></trk></gpx>\n"
    )


def test_gpx_track_interpolates(tmp_path: Path):
    path = tmp_path / "drive.gpx"
    # Points out of order in the file: the track sorts them by time.
    path.write_text(gpx_text(reverse=True))
    track = PositionTrack.load(path, max_fix_age_s=3.0, max_gap_s=60.0)
    assert len(track) == 3 and track.start == T0 and track.end == DRIVE[2][0]

    # First segment, a quarter of the way: course 350 -> 10 across north, speeds given.
    fix = track.position_at(T0 + timedelta(seconds=2.5))
    assert fix is not None and not fix.stale and fix.age_s == pytest.approx(2.5)
    p = fix.position
    assert p.lat == pytest.approx(22.30025, abs=1e-9) and p.lon == pytest.approx(114.17)
    assert p.heading == pytest.approx(355.0)
    assert p.speed_kmh == pytest.approx(37.8)  # 36 + 0.25 * (43.2 - 36)
    assert p.fix_time == T0 + timedelta(seconds=2.5)
    # Half way the course passes through north (0, not 180).
    half = track.position_at(T0 + timedelta(seconds=5))
    assert half is not None and half.position.heading == pytest.approx(0.0, abs=1e-9)
    assert half.stale  # 5 s from the nearest real point, limit 3 s

    # Second segment: no course or speed there; both come from the segment itself.
    fix = track.position_at(T0 + timedelta(seconds=15))
    assert fix is not None
    p = fix.position
    assert p.lat == pytest.approx(22.301) and p.lon == pytest.approx(114.1705, abs=1e-9)
    assert p.heading == pytest.approx(90.0, abs=1e-3)  # due east (great circle: 89.9998)
    # 0.001 deg of longitude at 22.301 N = 102.878 m in 10 s.
    assert p.speed_kmh == pytest.approx(37.036, abs=0.01)

    # Exactly on a point: that point, age 0.
    exact = track.position_at(DRIVE[1][0])
    assert exact is not None and exact.age_s == 0.0 and exact.position.lat == 22.301

    # Outside the track: the end point within max_gap, then nothing.
    before = track.position_at(T0 - timedelta(seconds=30))
    assert before is not None and before.stale and before.age_s == pytest.approx(30.0)
    assert before.position.lat == 22.300
    after = track.position_at(DRIVE[2][0] + timedelta(seconds=1))
    assert after is not None and not after.stale and after.position.lon == 114.171
    assert track.position_at(T0 - timedelta(seconds=61)) is None
    assert track.position_at(DRIVE[2][0] + timedelta(minutes=5)) is None


def test_gpx_without_namespace_or_extensions(tmp_path: Path):
    path = tmp_path / "plain.gpx"
    path.write_text(
        gpx_text(extensions=False).replace(' xmlns="http://www.topografix.com/GPX/1/1"', "")
    )
    track = PositionTrack.load(path)
    fix = track.position_at(T0 + timedelta(seconds=5))
    assert fix is not None
    assert fix.position.heading == pytest.approx(0.0, abs=1e-9)  # due north
    assert fix.position.speed_kmh == pytest.approx(40.030, abs=0.01)  # 111.195 m in 10 s


def test_nmea_log_track_across_midnight(tmp_path: Path):
    t = datetime(2025, 12, 31, 23, 59, 57, tzinfo=UTC)
    lines = [
        "# recorded by a logger; the first GGA is before any RMC",
        gga(t, "2217.0000,N", "11410.0000,E"),
        rmc(t + timedelta(seconds=1), "2217.0060,N", "11410.0000,E", "21.6", "0.0"),
        bad_checksum(nmea("GPRMC,this line is noise")),
        nmea("GPGSV,1,1,01,03,03,111,00"),
        gga(t + timedelta(seconds=2), "2217.0120,N", "11410.0000,E"),
        "2026-01-01T00:00:00Z " + rmc(t + timedelta(seconds=3), "2217.0180,N", "11410.0000,E"),
    ]
    path = tmp_path / "drive.nmea"
    path.write_text("\n".join(lines) + "\n")
    track = PositionTrack.load(path, max_fix_age_s=2.0)
    assert [p.fix_time for p in track.points] == [t + timedelta(seconds=s) for s in range(4)]
    assert track.points[-1].fix_time == datetime(2026, 1, 1, tzinfo=UTC)
    # The comment line is not a sentence: counted as malformed, like the noise.
    assert track.errors == {"checksum": 1, "malformed": 1}
    # 0.006 minutes of latitude per second = 11.1195 m/s; RMC said 21.6 kn = 40.0 km/h.
    fix = track.position_at(t + timedelta(seconds=1.5))
    assert fix is not None and not fix.stale and fix.age_s == pytest.approx(0.5)
    assert fix.position.lat == pytest.approx(22 + 17.009 / 60, abs=1e-9)
    assert fix.position.heading == pytest.approx(0.0, abs=1e-6)  # segment bearing: north
    assert fix.position.speed_kmh == pytest.approx(40.030, abs=0.01)  # from the segment


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("empty.nmea", "\n  \n", "empty"),
        ("words.txt", "hello world\nnothing here\n", "no valid NMEA position fix"),
        (
            "noise.nmea",
            "\n" + bad_checksum(nmea("GPGSV,1,1,01")) + "\n",
            "first bad data at line 2",
        ),
        (
            "nofix.nmea",
            nmea("GPRMC,081500.00,V,,,,,,,150326,,,N") + "\n",
            "no valid NMEA position fix",
        ),
        (
            "gga.nmea",
            nmea("GPGGA,081500.00,2217.1234,N,11410.5678,E,1,08,0.9,,,,,,") + "\n",
            "no valid RMC",
        ),
        ("broken.gpx", "<gpx><trk><trkseg>", "not valid XML"),
        ("other.xml", "<kml><Document/></kml>", "not a GPX file (root element <kml>)"),
        ("nopoints.gpx", '<gpx version="1.1"><wpt lat="1" lon="2"/></gpx>', "no track points"),
        (
            "notime.gpx",
            '<gpx><trk><trkseg><trkpt lat="1" lon="2"></trkpt></trkseg></trk></gpx>',
            "track point 1: no <time>",
        ),
        (
            "badlat.gpx",
            '<gpx><trk><trkseg><trkpt lat="x" lon="2"><time>2026-01-01T00:00:00Z</time>'
            "</trkpt></trkseg></trk></gpx>",
            "non-numeric lat/lon",
        ),
    ],
)
def test_bad_track_files(tmp_path: Path, name: str, text: str, expected: str):
    path = write(tmp_path, name, text)
    with pytest.raises(GpsFileError) as info:
        PositionTrack.load(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_track_file(tmp_path: Path):
    with pytest.raises(GpsFileError, match="no such file"):
        PositionTrack.load(tmp_path / "absent.gpx")
    with pytest.raises(GpsFileError, match="is a directory"):
        PositionTrack.load(tmp_path)


def test_track_merges_points_of_one_epoch():
    a = Position(1.0, 2.0, T0, heading=None, speed_kmh=50.0)
    b = Position(1.0, 2.0, T0, heading=30.0)
    c = Position(1.001, 2.0, T0 + timedelta(seconds=1))
    track = PositionTrack([c, a, b])
    assert len(track) == 2
    assert track.points[0].heading == 30.0 and track.points[0].speed_kmh == 50.0


def test_clock_synchronised_answers_without_raising():
    assert clock_synchronised() in (True, False, None)
