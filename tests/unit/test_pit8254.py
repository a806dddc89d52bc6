"""The 8254's channel 0 ticks where QEMU's i8254 puts them on an instruction-count clock."""

from emu.devices.pit8254 import NEVER, Pit8254


class FakeClock:
    def __init__(self):
        self.now = 0


def program(pit, clock, divisor, at):
    clock.now = at - 1
    pit.write(0x43, 1, 0x34)
    clock.now = at - 1
    pit.write(0x40, 1, divisor & 0xFF)
    clock.now = at           # the OUT of the high byte is instruction number `at`
    pit.write(0x40, 1, divisor >> 8)


def test_edges_follow_qemu_rule():
    clock = FakeClock()
    edges = []
    pit = Pit8254(lambda: clock.now, lambda: edges.append(clock.now))
    assert pit.next_deadline() == NEVER
    program(pit, clock, 1193, at=5000)
    expected = [5000 + ((k * 1193 + 1) * 10**9) // 1193182 for k in range(1, 6)]
    assert expected[:2] == [5000 + 1_000_685, 5000 + 2_000_533]
    got = []
    for _ in range(5):
        deadline = pit.next_deadline()
        got.append(deadline)
        clock.now = deadline
        assert pit.fire_due(deadline) == 1
    assert got == expected
    assert edges == expected and pit.ticks == 5


def test_edges_missed_while_behind_are_all_raised():
    clock = FakeClock()
    edges = []
    pit = Pit8254(lambda: clock.now, lambda: edges.append(1))
    program(pit, clock, 24, at=100)
    assert pit.fire_due(100 + 61_180) == 3   # edges at +20952, +41066, +61180
    assert pit.fire_due(100 + 81_294) == 0   # the 4th is at +81295
    assert pit.fire_due(100 + 81_295) == 1


def test_reload_restarts_the_period_and_zero_means_65536():
    clock = FakeClock()
    pit = Pit8254(lambda: clock.now, lambda: None)
    program(pit, clock, 0, at=10)
    assert pit.next_deadline() == 10 + ((65536 + 1) * 10**9) // 1193182
    program(pit, clock, 100, at=777)
    assert pit.next_deadline() == 777 + ((100 + 1) * 10**9) // 1193182


def test_counter_latch_reads_current_count():
    clock = FakeClock()
    pit = Pit8254(lambda: clock.now, lambda: None)
    program(pit, clock, 1000, at=0)
    clock.now = 100_000           # 119 PIT clocks later
    pit.write(0x43, 1, 0x00)      # latch channel 0
    clock.now = 900_000           # the latched value does not move
    low, high = pit.read(0x40, 1), pit.read(0x40, 1)
    assert low | (high << 8) == 1000 - (100_000 * 1193182 // 10**9) % 1000
