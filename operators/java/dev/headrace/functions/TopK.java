package dev.headrace.functions;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The state of {@code top_k(f, k)}: every distinct value of the window with its count, exact (the
 * state grows with the distinct count, as {@code count_distinct}'s does), so that parts merge
 * exactly and the k most frequent are read at the end. As bytes: int n, n + 1 int offsets into the
 * values' UTF-8 bytes (sorted, unsigned), the bytes, then n long counts. A value seen again is
 * counted in place; a new one is copied in.
 */
public final class TopK {
    private TopK() {}

    static int size(byte[] state) {
        return state == null ? 0 : ByteBuffer.wrap(state).getInt(0);
    }

    /** {@code state} with one more {@code value}; may change {@code state} in place and return it. */
    public static byte[] add(byte[] state, String value, long count) {
        return add(state, value.getBytes(StandardCharsets.UTF_8), count);
    }

    /** The same for a value's UTF-8 bytes (never kept: copied in). */
    static byte[] add(byte[] state, byte[] bytes, long count) {
        int n = size(state);
        if (n == 0) {
            ByteBuffer out = ByteBuffer.allocate(4 + 8 + bytes.length + 8);
            out.putInt(1).putInt(0).putInt(bytes.length).put(bytes).putLong(count);
            return out.array();
        }
        ByteBuffer in = ByteBuffer.wrap(state);
        int data = 4 + 4 * (n + 1);
        int used = in.getInt(4 + 4 * n);
        int lo = 0;
        int hi = n - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            int c = Arrays.compareUnsigned(state, data + in.getInt(4 + 4 * mid), data + in.getInt(8 + 4 * mid),
                    bytes, 0, bytes.length);
            if (c < 0) {
                lo = mid + 1;
            } else if (c > 0) {
                hi = mid - 1;
            } else {
                int at = data + used + 8 * mid;
                in.putLong(at, in.getLong(at) + count);
                return state;
            }
        }
        ByteBuffer out = ByteBuffer.allocate(state.length + 4 + bytes.length + 8);
        out.putInt(n + 1);
        for (int i = 0; i <= n + 1; i++) {
            int offset;
            if (i <= lo) {
                offset = in.getInt(4 + 4 * i);
            } else {
                offset = in.getInt(4 + 4 * (i - 1)) + bytes.length;
            }
            out.putInt(offset);
        }
        int split = in.getInt(4 + 4 * lo);
        out.put(state, data, split).put(bytes).put(state, data + split, used - split);
        out.put(state, data + used, 8 * lo).putLong(count).put(state, data + used + 8 * lo, 8 * (n - lo));
        return out.array();
    }

    /** Both states' counts added up (either may be null; neither is changed). */
    public static byte[] merge(byte[] a, byte[] b) {
        if (a == null) {
            return b;
        }
        if (b == null) {
            return a;
        }
        byte[] out = a.clone();
        ByteBuffer y = ByteBuffer.wrap(b);
        int m = size(b);
        int data = 4 + 4 * (m + 1);
        int used = y.getInt(4 + 4 * m);
        for (int j = 0; j < m; j++) {
            int from = data + y.getInt(4 + 4 * j);
            int to = data + y.getInt(8 + 4 * j);
            out = add(out, java.util.Arrays.copyOfRange(b, from, to), y.getLong(data + used + 8 * j));
        }
        return out;
    }

    /**
     * The {@code k} most frequent values with their counts, most frequent first, ties by value (its
     * UTF-8 bytes, unsigned), as JSON: {@code [{"value": v, "count": n}, ...]}; numbers and booleans unquoted
     * when {@code bare}. Null for an empty state.
     */
    public static String top(byte[] state, int k, boolean bare) {
        int n = size(state);
        if (n == 0) {
            return null;
        }
        ByteBuffer in = ByteBuffer.wrap(state);
        int data = 4 + 4 * (n + 1);
        int used = in.getInt(4 + 4 * n);
        List<Integer> order = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            order.add(i);
        }
        // values are stored in order already: a stable sort by count keeps ties in value order
        order.sort((i, j) -> Long.compare(in.getLong(data + used + 8 * j), in.getLong(data + used + 8 * i)));
        StringBuilder out = new StringBuilder("[");
        for (int r = 0; r < Math.min(k, n); r++) {
            int i = order.get(r);
            int from = data + in.getInt(4 + 4 * i);
            String value = new String(state, from, data + in.getInt(8 + 4 * i) - from, StandardCharsets.UTF_8);
            if (r > 0) {
                out.append(", ");
            }
            out.append("{\"value\": ").append(bare ? value : quoted(value))
                    .append(", \"count\": ").append(in.getLong(data + used + 8 * i)).append('}');
        }
        return out.append(']').toString();
    }

    private static String quoted(String value) {
        try {
            return RecordCheck.MAPPER.writeValueAsString(value);
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }
}
