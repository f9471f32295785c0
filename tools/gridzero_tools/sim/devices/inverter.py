"""A SoyoSource GTN limiter port (pure; syssi/esphome-soyosource-gtn-virtual-meter, components/soyosource_modbus).

Bytes from the RS485 link (a TCP stream in simulation) go through the
inverter service's own framer; each demand frame is one plant command. A
status query is answered only when ``answer_queries`` is set (many real units
never answer, syssi soyosource_modbus.cpp, README).
"""

from __future__ import annotations

from gridzero_inverter import codec
from gridzero_tools.sim.plant import Plant

AC_VOLTAGE_V = 230.0
AC_FREQUENCY_HZ = 50.0
TEMPERATURE_C = 35.0  # no inverter thermal model [U]


class InverterEmulator:
    """One unit: plant inverter ``unit`` listening on ``address``."""

    def __init__(
        self, unit: int, address: int = codec.DEFAULT_ADDRESS, *, answer_queries: bool = False
    ):
        self.unit = unit
        self.answer_queries = answer_queries
        self.framer = codec.Framer(addresses=frozenset({address}))
        self.demands = 0

    def on_bytes(self, plant: Plant, data: bytes, now_s: float) -> bytes:
        """Feed received bytes (then treat the line as idle); returns bytes to send back."""
        frames = self.framer.feed(data).frames + self.framer.flush().frames
        out = bytearray()
        for frame in frames:
            if isinstance(frame, codec.DemandFrame):
                if plant.command_inverter(self.unit, float(frame.power_w), now_s):
                    self.demands += 1
            elif (
                isinstance(frame, codec.StatusQuery)
                and self.answer_queries
                and not plant.inverter_link_down(self.unit, now_s)
            ):
                out += codec.encode_status_reply(self._status(plant))
        return bytes(out)

    def _status(self, plant: Plant) -> codec.StatusReply:
        inv = plant.inverters[self.unit]
        volts = plant.pack_voltage_v
        amps = inv.dc_power_w / volts if volts > 1.0 else 0.0
        return codec.StatusReply(
            operation_status=0 if inv.running else 2,
            battery_voltage_v=round(volts, 1),
            battery_current_a=round(amps, 1),
            ac_voltage_v=AC_VOLTAGE_V,
            ac_frequency_hz=AC_FREQUENCY_HZ,
            temperature_c=TEMPERATURE_C,
        )
