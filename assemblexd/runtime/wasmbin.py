"""What a module's binary declares that wasmtime's API does not show: all its memories and tables.

wasmtime-py lists a module's imports and exports only; a memory or table that is neither is
invisible to it, yet an instance allocates it. The deploy checks (``_wasm.CompiledModule``)
need every one of them, with its minimum size, so this module reads the memory and table
sections (and the import section's memories and tables) straight from the bytes.

It reads modules that wasmtime has already validated: on bytes it does not understand it
raises ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Memory", "Resources", "Table", "read_resources", "rename_imports"]

_SECTION_IMPORT = 2
_SECTION_TABLE = 4
_SECTION_MEMORY = 5

_PAGE = 65536


@dataclass(frozen=True)
class Memory:
    """One linear memory: its minimum size in bytes, and whether it is shared (threads)."""

    min_bytes: int
    shared: bool
    imported: bool = False


@dataclass(frozen=True)
class Table:
    """One table: its minimum number of elements."""

    min_elements: int
    imported: bool = False


@dataclass(frozen=True)
class Resources:
    """Every memory and table a module declares (imported ones first, as in its index space)."""

    memories: tuple[Memory, ...]
    tables: tuple[Table, ...]


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ValueError("unexpected end of section")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result
            if shift >= bits + 7:
                raise ValueError("LEB128 number too long")

    def sleb33(self) -> None:
        """Skip a signed LEB128 (a heap type index)."""
        while self.byte() & 0x80:
            pass

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise ValueError("unexpected end of section")
        self.pos += n

    def name(self) -> bytes:
        n = self.uleb()
        start = self.pos
        self.skip(n)
        return self.data[start : self.pos]

    def limits(self) -> tuple[int, int]:
        """(flags, minimum); the maximum and page size, if any, are read and dropped."""
        flags = self.byte()
        bits = 64 if flags & 0x04 else 32
        minimum = self.uleb(bits)
        if flags & 0x01:
            self.uleb(bits)
        return flags, minimum

    def memory(self, imported: bool = False) -> Memory:
        flags, minimum = self.limits()
        page = _PAGE
        if flags & 0x08:  # custom-page-sizes: the page size's log2 follows
            page = 1 << self.uleb()
        return Memory(min_bytes=minimum * page, shared=bool(flags & 0x02), imported=imported)

    def reftype(self) -> None:
        b = self.byte()
        if b in (0x63, 0x64):  # (ref null? <heap type>)
            self.sleb33()

    def table(self, imported: bool = False) -> Table:
        self.reftype()
        _, minimum = self.limits()
        return Table(min_elements=minimum, imported=imported)

    def import_desc(self) -> Table | Memory | None:
        """An import's description: a table, a memory, or None for the other kinds."""
        kind = self.byte()
        if kind == 0x00:  # function: type index
            self.uleb()
        elif kind == 0x01:
            return self.table(imported=True)
        elif kind == 0x02:
            return self.memory(imported=True)
        elif kind == 0x03:  # global: value type, mutability
            self.reftype()
            self.byte()
        elif kind == 0x04:  # tag: attribute, type index
            self.byte()
            self.uleb()
        else:
            raise ValueError(f"unknown import kind {kind}")
        return None


def read_resources(wasm: bytes) -> Resources:
    """The memories and tables of a (valid) module. Raises ValueError on bytes it cannot read."""
    if wasm[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    r = _Reader(wasm, 8)
    memories: list[Memory] = []
    tables: list[Table] = []
    imported_memories: list[Memory] = []
    imported_tables: list[Table] = []
    while r.pos < r.end:
        section = r.byte()
        size = r.uleb()
        start = r.pos
        r.skip(size)
        body = _Reader(wasm, start, start + size)
        if section == _SECTION_IMPORT:
            for _ in range(body.uleb()):
                body.name()
                body.name()
                item = body.import_desc()
                if isinstance(item, Table):
                    imported_tables.append(item)
                elif isinstance(item, Memory):
                    imported_memories.append(item)
        elif section == _SECTION_TABLE:
            count = body.uleb()
            for i in range(count):
                if wasm[body.pos : body.pos + 2] != b"\x40\x00":
                    tables.append(body.table())
                    continue
                # A table with an initializer expression after its type: this one's minimum
                # is read, but not the expression, so the minimums of the tables after it
                # stay unknown (0; the store's limits still hold them at instantiation).
                body.skip(2)
                tables.append(body.table())
                tables.extend(Table(min_elements=0) for _ in range(count - i - 1))
                break
        elif section == _SECTION_MEMORY:
            memories.extend(body.memory() for _ in range(body.uleb()))
    return Resources(memories=(*imported_memories, *memories), tables=(*imported_tables, *tables))


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def rename_imports(wasm: bytes, module: str, as_module: str, names: frozenset[str]) -> bytes:
    """``wasm`` with its imports ``module.<name>``, for ``name`` in ``names``, imported from
    ``as_module`` instead; the other imports and every other section are kept byte for byte.

    Returns ``wasm`` itself when no import is renamed. Raises ValueError on bytes it cannot
    read.
    """
    if wasm[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    old, new = module.encode(), as_module.encode()
    r = _Reader(wasm, 8)
    while r.pos < r.end:
        header = r.pos
        section = r.byte()
        size = r.uleb()
        start = r.pos
        r.skip(size)
        if section != _SECTION_IMPORT:
            continue
        body = _Reader(wasm, start, start + size)
        entries = bytearray(_uleb(count := body.uleb()))
        renamed = 0
        for _ in range(count):
            mod = body.name()
            field = body.name()
            desc = body.pos
            body.import_desc()
            if mod == old and field.decode("utf-8", "replace") in names:
                mod = new
                renamed += 1
            entries += _uleb(len(mod)) + mod + _uleb(len(field)) + field
            entries += wasm[desc : body.pos]
        if not renamed:
            return wasm
        entries += wasm[body.pos : body.end]
        return b"".join(
            (wasm[:header], bytes([section]), _uleb(len(entries)), entries, wasm[r.pos :])
        )
    return wasm
