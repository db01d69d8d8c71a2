package dev.headrace.functions;

/**
 * Where decoding is in a record's bytes ({@code data[pos, end)}), for the binary decoders; offsets
 * in their messages count from {@code base}, the record's first byte (not Flink's buffer).
 */
class ByteCursor {
    final byte[] data;
    int pos;
    final int end;
    final int base;

    ByteCursor(byte[] data, int pos, int end, int base) {
        this.data = data;
        this.pos = pos;
        this.end = end;
        this.base = base;
    }

    /** A position as an offset in the record. */
    final int at(int position) {
        return position - base;
    }

    /** Strict UTF-8 (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF). */
    final void utf8(int start, int n) throws DecodeError {
        byte[] d = data;
        int end = start + n;
        int i = start;
        while (i < end) {
            int b = d[i] & 0xFF;
            if (b < 0x80) {
                i++;
                continue;
            }
            int more;
            int lo = 0x80;
            int hi = 0xBF;
            if (b >= 0xC2 && b <= 0xDF) {
                more = 1;
            } else if (b >= 0xE0 && b <= 0xEF) {
                more = 2;
                lo = b == 0xE0 ? 0xA0 : 0x80;
                hi = b == 0xED ? 0x9F : 0xBF;
            } else if (b >= 0xF0 && b <= 0xF4) {
                more = 3;
                lo = b == 0xF0 ? 0x90 : 0x80;
                hi = b == 0xF4 ? 0x8F : 0xBF;
            } else {
                throw new DecodeError("string is not valid UTF-8 (byte 0x" + Integer.toHexString(b)
                        + " at offset " + (i - base) + ")");
            }
            for (int k = 1; k <= more; k++) {
                int next = i + k < end ? d[i + k] & 0xFF : -1;
                if (next < (k == 1 ? lo : 0x80) || next > (k == 1 ? hi : 0xBF)) {
                    throw new DecodeError("string is not valid UTF-8 (byte 0x" + Integer.toHexString(b)
                            + " at offset " + (i - base) + " starts a broken sequence)");
                }
            }
            i += more + 1;
        }
    }
}
