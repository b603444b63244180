"""png_panels.py: the PNG side of tests/runtime/cli_attend.sh, with zlib and the PNG filters
written out here (not libpng, which cap uses), so the check does not share cap's decoder.

  png_panels.py write OUT.png W H
      an 8-bit RGB test image: a gradient with a red block in the left half
  png_panels.py check PNG W H N COLS CAPTION
      PNG decodes (8-bit RGB, every IDAT row unfiltered), is min(N, COLS) x ceil(N / COLS)
      panels of W x H, its tEXt Description is CAPTION, the N panels are not all the same
      below their word band, and cells without a panel are the background (32, 32, 32).
Exit status 0 when it holds; else 1 with the reason on stdout.
"""
import struct
import sys
import zlib


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write(path, w, h):
    rows = []
    for y in range(h):
        row = bytearray([0])  # filter: none
        for x in range(w):
            red = x < w // 2 and h // 4 <= y < h // 2 and w // 8 <= x
            row += bytes((220, 30, 30)) if red else bytes((x * 255 // w, y * 255 // h, 128))
        rows.append(bytes(row))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG signature")
    pos, idat, text, header = 8, b"", {}, None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError("bad CRC in %r" % kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            text[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + n
    w, h, depth, colour, _, _, interlace = header
    if (depth, colour, interlace) != (8, 2, 0):
        raise ValueError("not 8-bit RGB non-interlaced: %r" % (header,))
    raw, stride, out, prev = zlib.decompress(idat), w * 3, [], bytearray(w * 3)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b, c = prev[i], prev[i - 3] if i >= 3 else 0
            line[i] = (line[i] + (0, a, b, (a + b) // 2, paeth(a, b, c))[f]) & 0xFF
        out.append(line)
        prev = line
    return w, h, out, text


def check(path, w, h, n, cols, caption):
    pw, ph, rows, text = decode(path)
    c = min(n, cols)
    r = (n + c - 1) // c
    if (pw, ph) != (c * w, r * h):
        return "size %dx%d, want %dx%d (%d panels of %dx%d, %d per row)" % (pw, ph, c * w, r * h, n, w, h, cols)
    if text.get("Description") != caption:
        return "Description %r, want %r" % (text.get("Description"), caption)
    band = h // 4  # below the word band
    panels = set()
    for k in range(n):
        ox, oy = (k % c) * w, (k // c) * h
        panels.add(b"".join(bytes(rows[oy + y][ox * 3 : (ox + w) * 3]) for y in range(band, h)))
    if n > 1 and len(panels) == 1:
        return "all %d panels are the same" % n
    for k in range(n, c * r):
        ox, oy = (k % c) * w, (k // c) * h
        if rows[oy + h - 1][(ox + w - 1) * 3 : (ox + w) * 3] != bytearray((32, 32, 32)):
            return "cell %d has no panel but is not the background" % k
    print("%s: %d panels of %dx%d in %d x %d, %d distinct" % (path, n, w, h, c, r, len(panels)))
    return None


def main(argv):
    if argv[1] == "write":
        write(argv[2], int(argv[3]), int(argv[4]))
        return 0
    why = check(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6]), argv[7])
    if why:
        print(why)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
