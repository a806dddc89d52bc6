/*
 * vsprintf.c - a small vsnprintf: %d %i %u %x %X %p %s %c %%, with the flags
 * '0' and '-', a field width, and the l / ll / z length modifiers.
 */
#include "types.h"
#include "kernel.h"

#define ZEROPAD	1	/* pad with zeros */
#define LEFT	2	/* left justify */
#define LARGE	4	/* upper-case hex digits */

/* Store one character if there is room; always advance, to count the length. */
static inline char *put(char *str, char *end, char c)
{
	if (str < end)
		*str = c;
	return str + 1;
}

static char *number(char *str, char *end, unsigned long num, bool negative,
		    unsigned int base, int width, int flags)
{
	const char *digits = (flags & LARGE) ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	int i = 0;

	do {
		tmp[i++] = digits[num % base];
		num /= base;
	} while (num);
	width -= i + negative;

	if (!(flags & (ZEROPAD | LEFT)))
		while (width-- > 0)
			str = put(str, end, ' ');
	if (negative)
		str = put(str, end, '-');
	if (flags & ZEROPAD)
		while (width-- > 0)
			str = put(str, end, '0');
	while (i > 0)
		str = put(str, end, tmp[--i]);
	while (width-- > 0)
		str = put(str, end, ' ');
	return str;
}

static char *string(char *str, char *end, const char *s, int width, int flags)
{
	int len, i;

	if (!s)
		s = "(null)";
	len = strnlen(s, 4096);
	if (!(flags & LEFT))
		while (len < width--)
			str = put(str, end, ' ');
	for (i = 0; i < len; i++)
		str = put(str, end, s[i]);
	while (len < width--)
		str = put(str, end, ' ');
	return str;
}

/*
 * Like C's vsnprintf: writes at most size bytes including the NUL and returns
 * the length the whole output would have had.
 */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list args)
{
	char *str = buf, *end = buf + size;

	for (; *fmt; fmt++) {
		unsigned long num;
		bool negative = false;
		unsigned int base = 10;
		int flags = 0, width = 0, qualifier = 0;
		bool is_signed = false;

		if (*fmt != '%') {
			str = put(str, end, *fmt);
			continue;
		}

		for (fmt++; ; fmt++) {
			if (*fmt == '0')
				flags |= ZEROPAD;
			else if (*fmt == '-')
				flags |= LEFT;
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {	/* l, ll, z: all 64-bit here */
			qualifier = 'l';
			fmt++;
		}

		switch (*fmt) {
		case 'c':
			str = put(str, end, (char)va_arg(args, int));
			continue;
		case 's':
			str = string(str, end, va_arg(args, const char *), width, flags);
			continue;
		case 'p':
			str = number(str, end, (unsigned long)va_arg(args, void *), false,
				     16, 16, ZEROPAD);
			continue;
		case '%':
			str = put(str, end, '%');
			continue;
		case 'd':
		case 'i':
			is_signed = true;
			break;
		case 'u':
			break;
		case 'X':
			flags |= LARGE;
			base = 16;
			break;
		case 'x':
			base = 16;
			break;
		default:			/* unknown: print it as it is */
			str = put(str, end, '%');
			if (!*fmt)
				goto out;
			str = put(str, end, *fmt);
			continue;
		}

		if (qualifier == 'l') {
			num = va_arg(args, unsigned long);
			if (is_signed && (long)num < 0) {
				negative = true;
				num = -num;
			}
		} else if (is_signed) {
			int v = va_arg(args, int);

			negative = v < 0;
			num = negative ? -(long)v : v;
		} else {
			num = va_arg(args, unsigned int);
		}
		str = number(str, end, num, negative, base, width, flags);
	}
out:
	if (size > 0) {
		if (str < end)
			*str = '\0';
		else
			end[-1] = '\0';
	}
	return str - buf;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list args;
	int len;

	va_start(args, fmt);
	len = vsnprintf(buf, size, fmt, args);
	va_end(args);
	return len;
}

unsigned long simple_strtoul(const char *cp, const char **endp, unsigned int base)
{
	unsigned long result = 0;

	for (;;) {
		unsigned int digit;

		if (*cp >= '0' && *cp <= '9')
			digit = *cp - '0';
		else if (*cp >= 'a' && *cp <= 'f')
			digit = *cp - 'a' + 10;
		else if (*cp >= 'A' && *cp <= 'F')
			digit = *cp - 'A' + 10;
		else
			break;
		if (digit >= base)
			break;
		result = result * base + digit;
		cp++;
	}
	if (endp)
		*endp = cp;
	return result;
}
