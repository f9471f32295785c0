"""The R48 rectifier on its CAN bus (pure; the R48 CAN protocol as in PurpleAlien/R48_Rectifier rectifier.py and anikrooz/Emerson-Vertiv-R48 src/VertivPsu.cpp).

Writes to 0x0607FF83 set the plant's registers and are acknowledged (0x43,
the written bytes echoed) or refused with error 0xF3 (invalid data); the
control frame switches DC on/off; read requests get float replies. While a
``charger_silent`` fault is active nothing is heard and nothing is sent. While a
``rectifier_refuses_stored`` fault is active, writes of the stored fallback (0x24, 0x19)
get error 0xF3 and change nothing (all of them, or stored voltages below ``below_v``).
"""

from __future__ import annotations

from gridzero.codec import CodecError
from gridzero_charger import codec
from gridzero_charger.codec import CanFrame, Quantity, Register
from gridzero_tools.sim.faults import RectifierRefusesStored
from gridzero_tools.sim.plant import Plant

INVALID_DATA = 0xF3
MODULE_TEMPERATURE_C = 35.0  # the model has no rectifier thermal state [U]
_READ_ALL = (
    Quantity.OUTPUT_VOLTAGE,
    Quantity.OUTPUT_CURRENT,
    Quantity.CURRENT_LIMIT,
    Quantity.TEMPERATURE,
    Quantity.INPUT_VOLTAGE,
)


class RectifierEmulator:
    """Module address 0 on the charger bus."""

    def __init__(self, module: int = 0) -> None:
        self.module = module
        self.bad_frames = 0

    def on_frame(
        self, plant: Plant, arbitration_id: int, data: bytes, now_s: float
    ) -> list[CanFrame]:
        """React to one frame; returns the replies."""
        if plant.charger_silent(now_s):
            return []
        plant.rectifier.bind_faults(plant.active_faults)
        try:
            message = codec.decode_frame(arbitration_id, data)
        except CodecError:
            self.bad_frames += 1
            return []
        replies: list[CanFrame] = []
        if isinstance(message, codec.SetPoint):
            replies.append(self._write(plant, message, data, now_s))
        elif isinstance(message, codec.Control):
            plant.charger_dc(not (message.dc_off or message.ac_off), now_s)
        elif isinstance(message, codec.ReadRequest):
            replies.append(self._reading(plant, message.quantity, now_s, more=False))
        elif isinstance(message, codec.ReadAllRequest):
            last = len(_READ_ALL) - 1
            replies += [
                self._reading(plant, q, now_s, more=i < last) for i, q in enumerate(_READ_ALL)
            ]
        # replies (our own frames looping back) and anything else: nothing to do
        return replies

    def _write(self, plant: Plant, message: codec.SetPoint, data: bytes, now_s: float) -> CanFrame:
        register, value = message.register, message.value
        if _stored_refused(plant, register, value, now_s):
            return codec.encode_error_reply(
                codec.MsgType.WRITE, register, INVALID_DATA, module=self.module
            )
        ok = True
        if register == Register.ONLINE_VOLTAGE:
            ok = plant.command_charger_online(value, None, now_s)
        elif register == Register.ONLINE_CURRENT:
            ok = plant.command_charger_online(None, value, now_s)
        elif register == Register.OFFLINE_VOLTAGE:
            ok = plant.command_charger_offline(value, None, now_s)
        elif register == Register.OFFLINE_CURRENT:
            ok = plant.command_charger_offline(None, value, now_s)
        elif register == Register.AC_INPUT_CURRENT:
            ok = plant.charger_ac_limit(value, now_s)
        elif register in (Register.REMOTE_OFF, Register.MODULE_OFF):
            ok = plant.charger_dc(value < 0.5, now_s)
        if not ok:
            return codec.encode_error_reply(
                codec.MsgType.WRITE, register, INVALID_DATA, module=self.module
            )
        return codec.encode_write_ack(register, data, module=self.module)

    def _reading(self, plant: Plant, quantity: Quantity, now_s: float, *, more: bool) -> CanFrame:
        if quantity == Quantity.STATUS:
            return codec.encode_status({}, module=self.module, more=more)
        rect = plant.rectifier
        values = {
            Quantity.OUTPUT_VOLTAGE: rect.terminal_v if rect.dc_on else plant.pack_voltage_v,
            Quantity.OUTPUT_CURRENT: plant.charger_current_a,
            Quantity.CURRENT_LIMIT: rect.current_fraction(now_s),
            Quantity.TEMPERATURE: MODULE_TEMPERATURE_C,
            Quantity.INPUT_VOLTAGE: plant.params.charger.ac_voltage_v,
        }
        return codec.encode_reading(quantity, values[quantity], module=self.module, more=more)


def _stored_refused(plant: Plant, register: int, value: float, now_s: float) -> bool:
    """True if a ``rectifier_refuses_stored`` fault refuses this write."""
    if register not in (Register.OFFLINE_VOLTAGE, Register.OFFLINE_CURRENT):
        return False
    for fault in plant.active_faults(now_s):
        if not isinstance(fault, RectifierRefusesStored):
            continue
        if fault.below_v is None:
            return True
        if register == Register.OFFLINE_VOLTAGE and value < fault.below_v:
            return True
    return False
