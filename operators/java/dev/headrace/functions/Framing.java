package dev.headrace.functions;

import java.util.Collection;
import java.util.TreeSet;

/**
 * The Confluent wire format's header, for every format: the magic byte 0, then a 4-byte
 * big-endian schema id (Protobuf adds its message indexes after it, see ProtoDecoder).
 */
final class Framing {
    static final int HEADER = 5;

    private Framing() {
    }

    /** The schema id of a framed record at {@code data[from, from + length)}. */
    static int schemaId(byte[] data, int from, int length) throws DecodeError {
        if (length < HEADER) {
            throw new DecodeError("record of " + length + " byte(s) is too short for the Confluent "
                    + "wire format (a magic byte 0x00 and a 4-byte schema id come first)");
        }
        if (data[from] != 0) {
            throw new DecodeError("wrong magic byte 0x" + String.format("%02x", data[from] & 0xFF)
                    + ": not the Confluent wire format (0x00, then a 4-byte schema id)");
        }
        return (data[from + 1] & 0xFF) << 24 | (data[from + 2] & 0xFF) << 16 | (data[from + 3] & 0xFF) << 8
                | (data[from + 4] & 0xFF);
    }

    static DecodeError unknown(int id, String subject, Collection<Integer> known, String note) {
        return new DecodeError("unknown schema id " + id + " (subject '" + subject + "' has ids "
                + new TreeSet<>(known) + note + ")");
    }
}
