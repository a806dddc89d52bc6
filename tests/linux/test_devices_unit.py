"""The new device pieces a Linux guest needs, alone: the MC146818 RTC and the 16550's THRE
interrupt (emu/devices)."""

from emu.devices.rtc_mc146818 import BASE_TIME, Rtc
from emu.devices.uart16550 import Uart16550

NS = 1_000_000_000


def cmos(rtc, reg):
    rtc.write(0x70, 1, reg)
    return rtc.read(0x71, 1)


def test_rtc_reads_the_base_time_in_bcd_24h():
    clock = [0]
    rtc = Rtc(lambda: clock[0])
    # 2026-12-01 00:00:00 UTC, a Tuesday (RTC weekday 3, Sunday = 1)
    assert [cmos(rtc, r) for r in (0, 2, 4, 6, 7, 8, 9, 0x32)] == \
        [0x00, 0x00, 0x00, 3, 0x01, 0x12, 0x26, 0x20]
    assert (cmos(rtc, 0x0A), cmos(rtc, 0x0B), cmos(rtc, 0x0D)) == (0x26, 0x02, 0x80)


def test_rtc_runs_on_the_instruction_clock():
    clock = [(3600 + 61) * NS + 5]          # 1 h 1 min 1 s of guest time (1 insn = 1 ns)
    rtc = Rtc(lambda: clock[0])
    assert [cmos(rtc, r) for r in (4, 2, 0)] == [0x01, 0x01, 0x01]
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x06)                # binary, 24 h
    assert [cmos(rtc, r) for r in (4, 2, 0)] == [1, 1, 1]
    assert rtc.seconds() == BASE_TIME + 3661


def test_rtc_update_in_progress_only_in_the_last_244_us_of_a_second():
    clock = [NS - 244_001]
    rtc = Rtc(lambda: clock[0])
    assert cmos(rtc, 0x0A) & 0x80 == 0
    clock[0] = NS - 244_000
    assert cmos(rtc, 0x0A) & 0x80 == 0x80
    clock[0] = NS
    assert cmos(rtc, 0x0A) & 0x80 == 0


def test_rtc_set_freezes_then_the_written_time_runs_on():
    clock = [10 * NS]
    rtc = Rtc(lambda: clock[0])
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x82)                # SET, 24 h, BCD
    for reg, value in ((0, 0x30), (2, 0x45), (4, 0x12), (7, 0x02), (8, 0x01), (9, 0x27),
                       (0x32, 0x20)):
        rtc.write(0x70, 1, reg)
        rtc.write(0x71, 1, value)
    clock[0] = 20 * NS                      # frozen while SET holds
    assert cmos(rtc, 0) == 0x30
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x02)                # release: 2027-01-02 12:45:30 from now on
    clock[0] = 25 * NS
    assert [cmos(rtc, r) for r in (0, 2, 4, 7, 8, 9)] == [0x35, 0x45, 0x12, 0x02, 0x01, 0x27]


def test_rtc_register_c_clears_on_read_and_cmos_bytes_keep_what_was_written():
    rtc = Rtc(lambda: 0)
    rtc.cmos[0x0C] = 0x90
    assert cmos(rtc, 0x0C) == 0x90 and cmos(rtc, 0x0C) == 0
    rtc.write(0x70, 1, 0x80 | 0x40)         # NMI mask bit with index 0x40
    rtc.write(0x71, 1, 0x5A)
    assert rtc.nmi_masked and cmos(rtc, 0x40) == 0x5A
    assert rtc.read(0x70, 1) == 0xFF


def uart_with_line():
    levels = []
    uart = Uart16550(irq=levels.append)
    return uart, levels


def test_thre_interrupt_pending_when_enabled_with_thr_empty():
    uart, levels = uart_with_line()
    uart.write(0x3FA, 1, 0x01)              # FIFO on
    assert uart.read(0x3FA, 1) == 0xC1      # no interrupt
    uart.write(0x3F9, 1, 0x02)              # IER: THRI
    assert levels == [True]
    assert uart.read(0x3FA, 1) == 0xC2      # THRE is the source; reading acknowledges it
    assert levels == [True, False]
    assert uart.read(0x3FA, 1) == 0xC1


def test_thr_write_is_a_new_thre_edge_and_disabling_lowers_the_line():
    uart, levels = uart_with_line()
    uart.write(0x3F9, 1, 0x02)
    uart.read(0x3FA, 1)
    uart.write(0x3F8, 1, ord("x"))          # filled, sent at once, empty again
    assert levels == [True, False, True] and uart.output == b"x"
    uart.write(0x3F8, 1, ord("y"))
    assert levels == [True, False, True, False, True]
    uart.write(0x3F9, 1, 0x00)
    assert levels[-1] is False and uart.read(0x3FA, 1) == 0x01


def test_no_thre_interrupt_while_ier_is_clear():
    uart, levels = uart_with_line()
    uart.write(0x3F8, 1, ord("a"))
    assert levels == [] and uart.read(0x3FA, 1) == 0x01
