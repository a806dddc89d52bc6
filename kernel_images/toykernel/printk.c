/*
 * printk.c - the console: a 16550 UART on COM1, driven by polling.
 *
 * No UART interrupts: printk waits for the transmit holding register to be empty
 * (LSR bit 5) before each byte.  Under QEMU and kpemu it always is.
 */
#include "types.h"
#include "io.h"
#include "irqflags.h"
#include "kernel.h"

#define SERIAL_PORT	0x3f8	/* COM1 */
#define UART_TX		0	/* transmit holding register (DLAB=0) */
#define UART_DLL	0	/* divisor latch low (DLAB=1) */
#define UART_IER	1	/* interrupt enable (DLAB=0) */
#define UART_DLM	1	/* divisor latch high (DLAB=1) */
#define UART_FCR	2	/* FIFO control */
#define UART_LCR	3	/* line control */
#define UART_MCR	4	/* modem control */
#define UART_LSR	5	/* line status */

#define UART_LCR_DLAB	0x80
#define UART_LCR_8N1	0x03
#define UART_LSR_THRE	0x20

#define PRINTK_BUF	256

void serial_init(void)
{
	outb(0x00, SERIAL_PORT + UART_IER);		/* no interrupts: we poll */
	outb(UART_LCR_DLAB, SERIAL_PORT + UART_LCR);
	outb(0x01, SERIAL_PORT + UART_DLL);		/* 115200 baud */
	outb(0x00, SERIAL_PORT + UART_DLM);
	outb(UART_LCR_8N1, SERIAL_PORT + UART_LCR);	/* 8N1, divisor latch off */
	outb(0xc7, SERIAL_PORT + UART_FCR);		/* FIFOs on and cleared */
	outb(0x0b, SERIAL_PORT + UART_MCR);		/* DTR, RTS, OUT2 */
}

static void serial_putc(char c)
{
	while (!(inb(SERIAL_PORT + UART_LSR) & UART_LSR_THRE))
		;
	outb(c, SERIAL_PORT + UART_TX);
}

/*
 * Write bytes as they are ('\n' stays '\n').  Interrupts stay off for the whole
 * write, so a message from one task is never cut by another task's.
 */
void console_write(const char *s, size_t len)
{
	unsigned long flags;
	size_t i;

	local_irq_save(flags);
	for (i = 0; i < len; i++)
		serial_putc(s[i]);
	local_irq_restore(flags);
}

/* Format into a stack buffer (interrupts on), then print it in one piece. */
int printk(const char *fmt, ...)
{
	char buf[PRINTK_BUF];
	va_list args;
	int len;

	va_start(args, fmt);
	len = vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	if (len > PRINTK_BUF - 1)
		len = PRINTK_BUF - 1;
	console_write(buf, len);
	return len;
}
