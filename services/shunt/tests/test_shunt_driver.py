"""The driver against the register-level ADS1115 model (single-shot, continuous, errors)."""

from __future__ import annotations

import errno

import pytest

from gridzero_shunt.ads1115 import Ads1115, Ads1115Error, Ads1115Settings
from gridzero_shunt.ads1115_model import Ads1115Model
from gridzero_shunt.codec import (
    REG_CONFIG,
    REG_CONVERSION,
    REG_HI_THRESH,
    REG_LO_THRESH,
)


class FakeClock:
    """A clock the driver's sleeps advance: the model converts in simulated time."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.slept_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds
        self.slept_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def model(clock: FakeClock) -> Ads1115Model:
    return Ads1115Model(0x48, clock=clock)


def make(model: Ads1115Model, clock: FakeClock, **kw: object) -> Ads1115:
    return Ads1115(model, Ads1115Settings(**kw), sleep=clock.sleep, where="sim")  # type: ignore[arg-type]


# --- the model on its own -------------------------------------------------------------


def test_model_reset_values(model: Ads1115Model) -> None:
    # TI SBAS444 register map
    assert model.register(REG_CONVERSION) == 0x0000
    assert model.register(REG_CONFIG) == 0x8583
    assert model.register(REG_LO_THRESH) == 0x8000
    assert model.register(REG_HI_THRESH) == 0x7FFF


def test_model_block_and_word_byte_order(model: Ads1115Model) -> None:
    # Block reads arrive MSB first; SMBus words arrive little-endian (swapped).
    assert model.read_i2c_block_data(0x48, REG_CONFIG, 2) == [0x85, 0x83]
    assert model.read_word_data(0x48, REG_CONFIG) == 0x8385
    model.write_i2c_block_data(0x48, REG_HI_THRESH, [0x12, 0x34])
    assert model.register(REG_HI_THRESH) == 0x1234
    model.write_word_data(0x48, REG_LO_THRESH, 0x3412)
    assert model.register(REG_LO_THRESH) == 0x1234


def test_model_single_shot_os_bit(model: Ads1115Model, clock: FakeClock) -> None:
    model.input_v = 0.075
    model.write_i2c_block_data(0x48, REG_CONFIG, [0x8B, 0x83])  # 128 SPS single-shot
    assert model.register(REG_CONFIG) == 0x0B83  # OS reads 0 while converting
    assert model.register(REG_CONVERSION) == 0
    clock.now_s += 1 / 128
    assert model.register(REG_CONFIG) == 0x8B83  # done
    assert model.register(REG_CONVERSION) == 9600


def test_model_clips_at_full_scale(model: Ads1115Model, clock: FakeClock) -> None:
    model.write_i2c_block_data(0x48, REG_CONFIG, [0x0A, 0x83])  # continuous, +-0.256 V
    clock.now_s += 1
    model.input_v = 0.3
    assert model.register(REG_CONVERSION) == 0x7FFF
    model.input_v = -0.3
    assert model.register(REG_CONVERSION) == 0x8000


def test_model_continuous_keeps_old_value_until_first_conversion(
    model: Ads1115Model, clock: FakeClock
) -> None:
    model.input_v = 0.01
    model.write_i2c_block_data(0x48, REG_CONFIG, [0x0A, 0x83])
    assert model.register(REG_CONVERSION) == 0
    clock.now_s += 1 / 128
    assert model.register(REG_CONVERSION) == 1280


def test_model_nacks_wrong_address_and_pointer(model: Ads1115Model) -> None:
    with pytest.raises(OSError, match="Remote I/O") as exc:
        model.read_i2c_block_data(0x49, REG_CONFIG, 2)
    assert exc.value.errno == errno.EREMOTEIO
    with pytest.raises(OSError, match="Remote I/O"):
        model.read_i2c_block_data(0x48, 4, 2)


# --- driver against the model ------------------------------------------------------------


@pytest.mark.parametrize("transfer", ["block", "word"])
@pytest.mark.parametrize(("single", "rate"), [(True, 128), (True, 8), (False, 8), (False, 860)])
def test_driver_reads_100_amps(
    model: Ads1115Model, clock: FakeClock, transfer: str, single: bool, rate: int
) -> None:
    model.input_v = 0.075
    adc = make(model, clock, single_shot=single, data_rate_sps=rate, transfer=transfer)
    adc.start()
    assert adc.read_counts() == 9600
    model.input_v = -0.0375
    clock.sleep(1 / rate)  # let a continuous conversion see the new input
    assert adc.read_counts() == -4800
    assert adc.read_voltage_v() == pytest.approx(-0.0375)


@pytest.mark.parametrize("transfer", ["block", "word"])
def test_driver_writes_the_config_msb_first(
    model: Ads1115Model, clock: FakeClock, transfer: str
) -> None:
    adc = make(model, clock, single_shot=False, data_rate_sps=128, transfer=transfer)
    adc.start()
    assert model.register(REG_CONFIG) | 0x8000 == 0x8A83  # 0x0A83 with OS masked
    assert adc.read_register(REG_HI_THRESH) == 0x7FFF


def test_single_shot_waits_about_one_conversion(model: Ads1115Model, clock: FakeClock) -> None:
    adc = make(model, clock, single_shot=True, data_rate_sps=8)
    adc.start()
    before = clock.slept_s
    adc.read_counts()
    assert 1 / 8 <= clock.slept_s - before <= 2 / 8


def test_single_shot_times_out_when_os_never_sets(model: Ads1115Model, clock: FakeClock) -> None:
    adc = make(model, clock, single_shot=True, data_rate_sps=8, max_polls=3)
    adc.start()
    frozen = FakeClock()  # the model's clock no longer moves with the driver's sleeps
    model.clock = frozen
    with pytest.raises(Ads1115Error, match="conversion not ready after 3 polls"):
        adc.read_counts()


def test_missing_device_at_start(clock: FakeClock) -> None:
    model = Ads1115Model(0x49, clock=clock)
    adc = make(model, clock, address=0x48)
    with pytest.raises(Ads1115Error, match=r"ADS1115 at 0x48 on sim: writing 0x0a03 .*Remote I/O"):
        adc.start()


@pytest.mark.parametrize("err", [errno.EREMOTEIO, errno.EAGAIN, errno.ETIMEDOUT, errno.EIO])
@pytest.mark.parametrize("single", [True, False])
def test_injected_i2c_errors_raise_and_recover(
    model: Ads1115Model, clock: FakeClock, err: int, single: bool
) -> None:
    model.input_v = 0.01
    adc = make(model, clock, single_shot=single, data_rate_sps=128)
    adc.start()
    assert adc.read_counts() == 1280
    model.fail_next(1, err)
    with pytest.raises(Ads1115Error) as exc:
        adc.read_counts()
    assert isinstance(exc.value.__cause__, OSError)
    assert exc.value.__cause__.errno == err
    clock.sleep(0.01)
    assert adc.read_counts() == 1280


def test_continuous_notices_a_device_reset(model: Ads1115Model, clock: FakeClock) -> None:
    model.input_v = 0.01
    adc = make(model, clock, single_shot=False, data_rate_sps=128)
    adc.start()
    assert adc.read_counts() == 1280
    model.power_cycle()  # brown-out: back to single-shot power-down, conversion 0
    with pytest.raises(Ads1115Error, match="config reads back 0x8583"):
        adc.read_counts()
    assert adc.read_counts() == 1280  # reconfigured on the next read (start() waited)


def test_wrong_chip_is_refused(model: Ads1115Model, clock: FakeClock) -> None:
    class Stubborn(Ads1115Model):
        def _write(self, register: int, value: int) -> None:
            return None  # ignores every write

    stub = Stubborn(0x48, clock=clock)
    adc = make(stub, clock)
    with pytest.raises(Ads1115Error, match="not an ADS1115"):
        adc.start()


def test_driver_close_and_closed_bus(model: Ads1115Model, clock: FakeClock) -> None:
    adc = make(model, clock)
    adc.start()
    adc.close()
    with pytest.raises(Ads1115Error, match="Bad file descriptor"):
        adc.read_counts()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"address": 0x50}, "address 80 is not one of 0x48"),
        ({"fsr_v": 0.3}, "full-scale range 0.3"),
        ({"data_rate_sps": 100}, "100 SPS"),
        ({"transfer": "quick"}, "transfer 'quick'"),
        ({"max_polls": 0}, "max_polls"),
    ],
)
def test_bad_driver_settings(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Ads1115Settings(**kw)  # type: ignore[arg-type]
