"""Hypothesis strategies of the fuzz campaign: mutated ELF files from a seed, mutated text.

Every strategy draws a list of operations of tests/fuzz/mutations.py and applies it, so a
failing input shrinks to the fewest, smallest operations that still break the loader, and
the report prints that list.
"""

from hypothesis import strategies as st

from tests.fuzz import mutations as mu


def elf_ops(seed, max_ops=3):
    """Lists of mutations of the ELF file `seed`: a third set a header field (ELF, program
    or section header) to a boundary value or a random one, a third do the same to a field
    of a symbol, relocation or note (there are far more of those: drawn from one pool they
    would crowd the headers out), the rest flip, cut, clear, insert, delete or copy bytes."""
    fields = mu.elf64_fields(seed)
    headers = [f for f in fields if f.in_header]
    entries = [f for f in fields if not f.in_header]
    cuts = mu.elf64_boundaries(seed)
    n = len(seed)

    def field_op(field):
        current = mu.read_field(seed, field)
        value = st.one_of(st.sampled_from(mu.interesting_values(field, current, n)),
                          st.integers(0, (1 << 8 * field.size) - 1))
        return value.map(lambda v: ("set", field.offset, field.size, v))

    set_header = st.sampled_from(headers).flatmap(field_op)
    set_entry = st.sampled_from(entries).flatmap(field_op)
    pos = st.integers(0, n - 1)
    byte_ops = st.one_of(
        st.tuples(st.just("xor"), pos, st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.one_of(st.sampled_from(cuts), pos)),
        st.tuples(st.just("zero"), pos, st.integers(1, 64)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("copy"), pos, pos, st.integers(1, 64)),
    )
    return st.lists(st.one_of(set_header, set_entry, byte_ops), min_size=1,
                    max_size=max_ops)


def definition_text(seeds):
    """Probe definitions: a real one from `seeds`, mutated word-wise or byte-wise."""
    words = st.sampled_from(mu.DEFINITION_WORDS)

    def mutate(draw_seed):
        return st.lists(st.one_of(
            st.tuples(st.just("replace"), st.integers(0, 64), words),
            st.tuples(st.just("insert"), st.integers(0, 64), words),
            st.tuples(st.just("append"), st.integers(0, 64), words),
            st.tuples(st.just("drop"), st.integers(0, 64)),
            st.tuples(st.just("cut"), st.integers(0, 256)),
            st.tuples(st.just("char"), st.integers(0, 256),
                      st.characters(codec="utf-8")),
        ), min_size=0, max_size=4).map(lambda ops: _apply_text(draw_seed, ops))

    return st.sampled_from(seeds).flatmap(mutate)


def _apply_text(text, ops):
    """Word-level edits: the words are the text split at spaces, each keeping its space."""
    for op in ops:
        kind, pos = op[0], op[1]
        parts = text.split(" ")
        # Three times in four an edit spares the first word (the probe type and name), so
        # most inputs get as far as the arguments.
        i = pos % len(parts) if pos % 4 == 0 or len(parts) == 1 else 1 + pos % (len(parts) - 1)
        if kind == "replace":
            parts[i] = op[2]
        elif kind == "insert":
            parts.insert(i, op[2])
        elif kind == "append":
            parts[i] = parts[i] + op[2]
        elif kind == "drop" and len(parts) > 1:
            del parts[i]
        text = " ".join(parts)
        if kind == "cut":
            text = text[:pos % (len(text) + 1)]
        elif kind == "char":
            j = pos % (len(text) + 1)
            text = text[:j] + op[2] + text[j + 1:]
    return text
