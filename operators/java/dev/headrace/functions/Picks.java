package dev.headrace.functions;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * The states of {@code first(f)} and {@code last(f)}: the window's non-null value of the record
 * first (last) by event time, ties broken by source partition, then offset, so that a replay picks
 * the same record whatever order the records came in. As bytes: event time (long), partition
 * (int), offset (long), the value's type ({@code L} BIGINT, {@code D} DOUBLE, {@code Z} BOOLEAN,
 * {@code S} STRING) and its text (UTF-8). A record without a partition or offset (a file of the
 * embedded profile) counts as partition and offset {@code MIN_VALUE}.
 */
public final class Picks {
    private static final int HEAD = 8 + 4 + 8 + 1;

    private Picks() {}

    /** The state of one record's value (null for a null value). */
    public static byte[] of(Object value, Long eventMs, Integer partition, Long offset) {
        if (value == null) {
            return null;
        }
        byte[] text = Sketches.text(value).getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate(HEAD + text.length);
        out.putLong(eventMs == null ? Long.MIN_VALUE : eventMs);
        out.putInt(partition == null ? Integer.MIN_VALUE : partition);
        out.putLong(offset == null ? Long.MIN_VALUE : offset);
        out.put(tag(value));
        out.put(text);
        return out.array();
    }

    /** The state kept of two: {@code first} the earlier record's, {@code last} the later's. */
    public static byte[] merge(String kind, byte[] a, byte[] b) {
        if (a == null) {
            return b;
        }
        if (b == null) {
            return a;
        }
        int order = compare(a, b);
        return "first".equals(kind) ? (order <= 0 ? a : b) : (order >= 0 ? a : b);
    }

    /** The kept value, typed (null for none). */
    public static Object value(byte[] state) {
        if (state == null) {
            return null;
        }
        String text = new String(state, HEAD, state.length - HEAD, StandardCharsets.UTF_8);
        switch (state[HEAD - 1]) {
            case 'L':
                return Long.parseLong(text);
            case 'D':
                return Double.parseDouble(text);
            case 'Z':
                return Boolean.parseBoolean(text);
            default:
                return text;
        }
    }

    /** The kept value as text (null for none), for SQL to cast to the field's type. */
    public static String text(byte[] state) {
        Object value = value(state);
        return value == null ? null : String.valueOf(value);
    }

    private static byte tag(Object value) {
        if (value instanceof Long || value instanceof Integer || value instanceof Short || value instanceof Byte) {
            return 'L';
        }
        if (value instanceof Double || value instanceof Float) {
            return 'D';
        }
        return value instanceof Boolean ? (byte) 'Z' : (byte) 'S';
    }

    private static int compare(byte[] a, byte[] b) {
        ByteBuffer x = ByteBuffer.wrap(a);
        ByteBuffer y = ByteBuffer.wrap(b);
        int order = Long.compare(x.getLong(0), y.getLong(0));
        if (order == 0) {
            order = Integer.compare(x.getInt(8), y.getInt(8));
        }
        return order != 0 ? order : Long.compare(x.getLong(12), y.getLong(12));
    }
}
