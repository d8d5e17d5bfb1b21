"""tarheader.FastTarInfo against tarfile's own header parser, on real and on mutated headers.

The fast parser must accept exactly what tarfile accepts, with the same values, and refuse the rest
with tarfile's own error: every header here goes through both, and the results are compared.
"""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from unpacked.tarheader import FastTarInfo

FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname")
FIELDS += ("devmajor", "devminor")


def members() -> list[tarfile.TarInfo]:
    """One of each kind a layer holds, with the values that take tarfile's rarer paths."""
    made = []

    def add(name: str, kind: bytes = tarfile.REGTYPE, **values: object) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        for key, value in values.items():
            setattr(info, key, value)
        made.append(info)

    add("etc/os-release", size=0, mode=0o644, uid=0, gid=0, mtime=1700000000, uname="root", gname="root")
    add("usr/bin", tarfile.DIRTYPE, mode=0o755)
    add("usr/bin/sh", tarfile.SYMTYPE, linkname="busybox")
    add("usr/bin/ls", tarfile.LNKTYPE, linkname="usr/bin/busybox")
    add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
    add("run/fifo", tarfile.FIFOTYPE)
    add("setuid", mode=0o4755, uid=1000, gid=1000)
    add("big-ids", uid=2**21 + 5, gid=2**30)  # past 7 octal digits: base-256 in GNU format
    add("huge-mtime", mtime=2**34)
    add("/".join(["deep"] * 30) + "/file")  # past 100 characters: a ustar prefix, or a long name
    add("caf\u00e9/na\u00efve")  # not ASCII
    return made


def headers() -> list[bytes]:
    """The 512-byte headers of `members()` as GNU, ustar and PAX tar writers write them."""
    found = []
    for form in (tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT):
        for info in members():
            try:
                data = info.tobuf(form, "utf-8", "surrogateescape")
            except ValueError:  # ustar cannot hold it (a big id, a long name): not a header of it
                continue
            found += [data[offset : offset + 512] for offset in range(0, len(data), 512)]
    return found


def parse(kind: type[tarfile.TarInfo], buf: bytes) -> tuple[str, object]:
    try:
        info = kind.frombuf(buf, "utf-8", "surrogateescape")
    except Exception as err:  # compared, type and message
        return "error", (type(err), str(err))
    return "ok", tuple(getattr(info, field) for field in FIELDS)


def mutated(buf: bytes, rng: random.Random) -> bytes:
    """`buf` with a few bytes changed, mostly in the numeric fields; half the time with its checksum
    made right again, so that the parse goes past the checksum."""
    data = bytearray(buf)
    for _ in range(rng.randint(1, 3)):
        position = rng.choice([rng.randrange(100, 157), rng.randrange(329, 345), rng.randrange(512)])
        data[position] = rng.choice([0, 0x20, 0x30, 0x37, 0x38, 0x1C, 0x2B, 0x5F, 0x80, 0xFF, rng.randrange(256)])
    if rng.random() < 0.5:
        data[148:156] = b"        "
        data[148:156] = b"%06o\0 " % (sum(data) & 0o777777)
    return bytes(data)


@pytest.mark.parametrize("buf", headers(), ids=lambda buf: buf[:40].split(b"\0")[0].decode("utf-8", "replace"))
def test_real_headers_parse_as_tarfile_parses_them(buf: bytes) -> None:
    assert parse(FastTarInfo, buf) == parse(tarfile.TarInfo, buf)


def test_mutated_headers_parse_or_fail_as_tarfile_does(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(9)
    bases = headers()
    outcomes = {"ok": 0, "error": 0, "ok without tarfile": 0}
    handed_over = []
    original = tarfile.TarInfo.frombuf.__func__  # type: ignore[attr-defined]

    def counted(cls: type[tarfile.TarInfo], buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        handed_over.append(buf)
        return original(cls, buf, encoding, errors)  # type: ignore[no-any-return]

    for _ in range(20000):
        buf = mutated(rng.choice(bases), rng)
        reference = parse(tarfile.TarInfo, buf)
        handed_over.clear()
        with monkeypatch.context() as patch:
            patch.setattr(tarfile.TarInfo, "frombuf", classmethod(counted))
            fast = parse(FastTarInfo, buf)
        assert fast == reference, buf
        outcomes[reference[0]] += 1
        outcomes["ok without tarfile"] += fast[0] == "ok" and not handed_over
    assert min(outcomes.values()) > 2000, outcomes  # both sides reached, and the fast path itself


def test_special_blocks_are_tarfiles_errors() -> None:
    for buf in (b"", b"\0" * 100, bytes(512)):
        assert parse(FastTarInfo, buf) == parse(tarfile.TarInfo, buf)
        assert parse(FastTarInfo, buf)[0] == "error"


def test_a_whole_archive_reads_the_same() -> None:
    """Long names, PAX records and GNU long links go through FastTarInfo.fromtarfile as through
    tarfile's: the members of a PAX and a GNU archive come out equal."""
    for form in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=form) as archive:
            for info in members():
                archive.addfile(info, io.BytesIO(bytes(info.size)) if info.isreg() else None)
        read = []
        for kind in (tarfile.TarInfo, FastTarInfo):
            with tarfile.open(fileobj=io.BytesIO(buffer.getvalue()), mode="r:", tarinfo=kind) as archive:
                read.append([tuple(getattr(m, field) for field in FIELDS) for m in archive.getmembers()])
        assert read[0] == read[1] and len(read[0]) == len(members())
