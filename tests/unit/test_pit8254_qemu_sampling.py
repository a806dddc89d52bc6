"""The 8254 model follows QEMU's sampled OUT pin, rounding included (QEMU 7.2 i8254):
the closed-form mode-2 rule everywhere it holds, and QEMU's two exceptions -- a count of 1
gives one edge and then none (QEMU hangs a kernel that asks for it, and so must kpemu), and
an edge whose sample lands exactly on a nanosecond is not seen."""

from emu.devices.pit8254 import NEVER, NS_PER_SEC, PIT_FREQ, Pit8254


class FakeClock:
    def __init__(self):
        self.now = 0


def programmed(divisor, at, mode=2):
    clock = FakeClock()
    edges = []
    pit = Pit8254(lambda: clock.now, lambda: edges.append(clock.now))
    clock.now = at
    pit.write(0x43, 1, 0x30 | mode << 1)
    pit.write(0x40, 1, divisor & 0xFF)
    pit.write(0x40, 1, divisor >> 8)
    return pit, clock, edges


def run_edges(pit, clock, n, horizon=None):
    got = []
    while len(got) < n:
        deadline = pit.next_deadline()
        if deadline == NEVER or (horizon is not None and deadline > horizon):
            break
        clock.now = deadline
        assert pit.fire_due(deadline) == 1
        got.append(deadline)
    return got


def rule(t0, divisor, ks):
    return [t0 + ((k * divisor + 1) * NS_PER_SEC) // PIT_FREQ for k in ks]


def test_mode2_matches_the_closed_form_for_the_kernels_divisors():
    for divisor in (2, 3, 24, 40, 60, 1193, 35796, 62799, 65535):
        pit, clock, _ = programmed(divisor, at=12345)
        n = min(40, 500_000 // divisor + 2)       # stay short of the 0.5 s exact points
        assert run_edges(pit, clock, n) == rule(12345, divisor, range(1, n + 1)), divisor


def test_divisor_1_gives_one_edge_then_out_stays_high():
    pit, clock, edges = programmed(1, at=1000)
    assert pit.next_deadline() == 1000 + (2 * NS_PER_SEC) // PIT_FREQ    # 1676 ns later
    assert run_edges(pit, clock, 5) == [2676]
    assert pit.next_deadline() == NEVER
    assert pit.fire_due(10**9) == 0 and pit.ticks == 1
    # a new count starts it again
    clock.now = 5000
    pit.write(0x40, 1, 24)
    pit.write(0x40, 1, 0)
    assert pit.next_deadline() == rule(5000, 24, [1])[0]


def test_an_edge_sampled_exactly_on_a_nanosecond_is_lost():
    # 596591 = 1193182 / 2: (k*D + 1) * 10^9 / 1193182 is a whole number of ns when
    # 596591 divides k*D + 1.  D = 59659 (hz=20), k = 10: k*D + 1 = 596591.
    divisor = 59659
    pit, clock, _ = programmed(divisor, at=0)
    got = run_edges(pit, clock, 11)
    expected = rule(0, divisor, range(1, 13))
    assert got[:9] == expected[:9]
    assert expected[9] == 500_000_000 and expected[9] not in got
    assert got[9:] == expected[10:12]


def test_mode0_one_shot_and_mode3_square_wave_follow_qemus_samples():
    pit, clock, _ = programmed(100, at=0, mode=0)
    # QEMU samples at floor(D*10^9/F) (still low), then 1 ns later (high).
    assert run_edges(pit, clock, 3) == [(100 * NS_PER_SEC) // PIT_FREQ + 1]
    assert pit.next_deadline() == NEVER
    pit, clock, _ = programmed(100, at=0, mode=3)
    assert run_edges(pit, clock, 3) == [(k * 100 * NS_PER_SEC) // PIT_FREQ + 1
                                        for k in (1, 2, 3)]
