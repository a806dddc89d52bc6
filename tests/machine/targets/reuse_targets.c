/*
 * reuse_targets: a module loaded where probe_targets was, after it has gone: its first
 * function spans the addresses probe_targets had probes on, with other instructions there.
 */
long reuse_mix(long n)
{
	long a = 1, b = 7;
	long i;

	for (i = 0; i < n; i++) {
		a = a * 31 + (b ^ i);
		b = (b << 3) - a + 0x1234567;
		if (a & 0x100)
			b ^= 0x5a5a5a5a;
	}
	return a ^ b;
}
