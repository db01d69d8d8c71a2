package dev.headrace.functions;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * The mergeable states of the measures that cannot be merged as numbers, each as bytes (so that a
 * window's state, its parts and a view's stored sketch are one thing), with what is read from them:
 *
 * <ul>
 *   <li>{@code distinct} (exact {@code count_distinct}): the window's distinct values, sorted
 *       (UTF-8, length-prefixed). Exact; its size grows with the distinct count.
 *   <li>{@code hll} ({@code approx_count_distinct}): up to {@value #EXACT_HASHES} distinct values the
 *       sorted set of their 64-bit hashes (exact but for hash collisions, about n²/2^65), then a
 *       HyperLogLog of 2^{@value #P} one-byte registers: relative standard error 1.04/√16384 = 0.81%.
 *   <li>{@code dd} ({@code percentile}): a DDSketch with relative accuracy {@value #ALPHA}: the
 *       q-quantile read from it is within 1% (relative) of the exact one, the value at rank
 *       ⌊q·(n−1)⌋ of the window's values in order.
 *   <li>{@code first}, {@code last}: one record's value, by event time, partition and offset
 *       ({@link Picks}).
 *   <li>{@code topk}: every distinct value with its count ({@link TopK}).
 *   <li>{@code rows} ({@code udaf}): every record's values, a JSON array each: an int, the length
 *       used, then the arrays separated by commas (and room to grow, so that adding one is not a
 *       copy of all). A user-defined aggregate finishes them ({@link UdafJava}, or Python).
 * </ul>
 */
public final class Sketches {
    static final int P = 14;
    static final int M = 1 << P;
    static final int EXACT_HASHES = 1024;
    static final double ALPHA = 0.01;
    static final double GAMMA = (1 + ALPHA) / (1 - ALPHA);
    static final double LOG_GAMMA = Math.log(GAMMA);
    /** Values closer to zero than this count as zero in a DDSketch. */
    static final double MIN_INDEXABLE = 1e-9;

    private static final byte HASHES = 1;
    private static final byte REGISTERS = 2;

    private Sketches() {}

    // -- one value -------------------------------------------------------------------------------

    /** The state of one value (null for a null value). */
    public static byte[] of(String kind, Object value) {
        if (value == null) {
            return null;
        }
        return add(kind, null, value);
    }

    /** {@code state} with {@code value} added; {@code state} may be changed in place and returned. */
    public static byte[] add(String kind, byte[] state, Object value) {
        if (value == null) {
            return state;
        }
        switch (kind) {
            case "distinct":
                return addString(state, text(value));
            case "hll":
                return addHash(state, hash(text(value)));
            case "dd":
                return addValue(state, ((Number) value).doubleValue(), 1);
            case "topk":
                return TopK.add(state, text(value), 1);
            case "rows":
                return addRows(state, value.toString().getBytes(StandardCharsets.UTF_8), true);
            default:
                throw new IllegalArgumentException("no sketch '" + kind + "'");
        }
    }

    /** Both states together (either may be null). */
    public static byte[] merge(String kind, byte[] a, byte[] b) {
        if (a == null) {
            return b;
        }
        if (b == null) {
            return a;
        }
        switch (kind) {
            case "distinct":
                return mergeStrings(a, b);
            case "hll":
                return mergeHll(a, b);
            case "first":
            case "last":
                return Picks.merge(kind, a, b);
            case "topk":
                return TopK.merge(a, b);
            case "rows":
                return addRows(a.clone(), Arrays.copyOfRange(b, 4, 4 + ByteBuffer.wrap(b).getInt(0)), false);
            case "dd": {
                byte[] out = a;
                ByteBuffer in = ByteBuffer.wrap(b);
                while (in.remaining() >= 12) {
                    int index = in.getInt();
                    long count = in.getLong();
                    out = addIndex(out, index, count);
                }
                return out;
            }
            default:
                throw new IllegalArgumentException("no sketch '" + kind + "'");
        }
    }

    /** Rows with more rows appended (one, or several already comma-separated); grows by doubling. */
    static byte[] addRows(byte[] state, byte[] rows, boolean room) {
        if (state == null) {
            byte[] out = new byte[4 + rows.length + (room ? rows.length * 3 : 0)];
            ByteBuffer.wrap(out).putInt(0, rows.length);
            System.arraycopy(rows, 0, out, 4, rows.length);
            return out;
        }
        int used = ByteBuffer.wrap(state).getInt(0);
        int need = 4 + used + 1 + rows.length;
        byte[] out = state;
        if (need > state.length) {
            out = Arrays.copyOf(state, room ? Math.max(need, 2 * state.length) : need);
        }
        out[4 + used] = ',';
        System.arraycopy(rows, 0, out, 5 + used, rows.length);
        ByteBuffer.wrap(out).putInt(0, used + 1 + rows.length);
        return out;
    }

    // -- reading ---------------------------------------------------------------------------------

    /** The distinct count (exact for {@code distinct}, estimated for {@code hll}). */
    public static Long count(String kind, byte[] state) {
        if (state == null) {
            return 0L;
        }
        if ("distinct".equals(kind)) {
            return (long) size(state);
        }
        if (state[0] == HASHES) {
            return (long) ((state.length - 1) / 8);
        }
        double sum = 0;
        int zeros = 0;
        for (int i = 1; i <= M; i++) {
            sum += Math.scalb(1.0, -state[i]);
            if (state[i] == 0) {
                zeros++;
            }
        }
        double alpha = 0.7213 / (1 + 1.079 / M);
        double estimate = alpha * M * M / sum;
        if (estimate <= 2.5 * M && zeros > 0) {
            estimate = M * Math.log((double) M / zeros);
        }
        return Math.round(estimate);
    }

    /** The q-quantile of a DDSketch state (null when it holds no value). */
    public static Double quantile(byte[] state, double q) {
        if (state == null || state.length < 12) {
            return null;
        }
        ByteBuffer in = ByteBuffer.wrap(state);
        long total = 0;
        while (in.remaining() >= 12) {
            in.getInt();
            total += in.getLong();
        }
        long rank = (long) Math.floor(q * (total - 1));
        in.rewind();
        long seen = 0;
        while (in.remaining() >= 12) {
            int index = in.getInt();
            seen += in.getLong();
            if (seen > rank) {
                return valueOf(index);
            }
        }
        return null;
    }

    // -- distinct (exact) ------------------------------------------------------------------------

    static String text(Object value) {
        return value instanceof String ? (String) value : String.valueOf(value);
    }

    /*
     * The distinct values, sorted by their UTF-8 bytes (unsigned): int n, n + 1 int offsets into
     * the data that follows, the data. Found by binary search; a new value is copied in.
     */

    static int size(byte[] state) {
        return state == null ? 0 : ByteBuffer.wrap(state).getInt(0);
    }

    static String[] strings(byte[] state) {
        int n = size(state);
        String[] out = new String[n];
        ByteBuffer in = ByteBuffer.wrap(state == null ? new byte[4] : state);
        int data = 4 + 4 * (n + 1);
        for (int i = 0; i < n; i++) {
            int from = in.getInt(4 + 4 * i);
            int to = in.getInt(8 + 4 * i);
            out[i] = new String(state, data + from, to - from, StandardCharsets.UTF_8);
        }
        return out;
    }

    /** The values of both sets, in one ordered pass. */
    private static byte[] mergeStrings(byte[] a, byte[] b) {
        ByteBuffer x = ByteBuffer.wrap(a);
        ByteBuffer y = ByteBuffer.wrap(b);
        int n = size(a);
        int m = size(b);
        int xData = 4 + 4 * (n + 1);
        int yData = 4 + 4 * (m + 1);
        int[] from = new int[n + m];
        int[] to = new int[n + m];
        byte[][] source = new byte[n + m][];
        int count = 0;
        int i = 0;
        int j = 0;
        while (i < n || j < m) {
            int c;
            if (i == n) {
                c = 1;
            } else if (j == m) {
                c = -1;
            } else {
                c = Arrays.compareUnsigned(a, xData + x.getInt(4 + 4 * i), xData + x.getInt(8 + 4 * i),
                        b, yData + y.getInt(4 + 4 * j), yData + y.getInt(8 + 4 * j));
            }
            if (c <= 0) {
                source[count] = a;
                from[count] = xData + x.getInt(4 + 4 * i);
                to[count++] = xData + x.getInt(8 + 4 * i);
                i++;
                j += c == 0 ? 1 : 0;
            } else {
                source[count] = b;
                from[count] = yData + y.getInt(4 + 4 * j);
                to[count++] = yData + y.getInt(8 + 4 * j);
                j++;
            }
        }
        int bytes = 0;
        for (int k = 0; k < count; k++) {
            bytes += to[k] - from[k];
        }
        ByteBuffer out = ByteBuffer.allocate(4 + 4 * (count + 1) + bytes);
        out.putInt(count);
        int offset = 0;
        for (int k = 0; k < count; k++) {
            out.putInt(offset);
            offset += to[k] - from[k];
        }
        out.putInt(offset);
        for (int k = 0; k < count; k++) {
            out.put(source[k], from[k], to[k] - from[k]);
        }
        return out.array();
    }

    private static byte[] addString(byte[] state, String value) {
        byte[] bytes = value.getBytes(StandardCharsets.UTF_8);
        int n = size(state);
        int data = 4 + 4 * (n + 1);
        ByteBuffer in = ByteBuffer.wrap(state == null ? new byte[8] : state);
        int lo = 0;
        int hi = n - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            int from = data + in.getInt(4 + 4 * mid);
            int to = data + in.getInt(8 + 4 * mid);
            int c = Arrays.compareUnsigned(state, from, to, bytes, 0, bytes.length);
            if (c < 0) {
                lo = mid + 1;
            } else if (c > 0) {
                hi = mid - 1;
            } else {
                return state;
            }
        }
        int used = n == 0 ? 0 : in.getInt(4 + 4 * n);
        int split = n == 0 ? 0 : in.getInt(4 + 4 * lo);
        ByteBuffer out = ByteBuffer.allocate(4 + 4 * (n + 2) + used + bytes.length);
        out.putInt(n + 1);
        for (int i = 0; i <= n + 1; i++) {
            int offset = i <= lo ? (i == 0 ? 0 : in.getInt(4 + 4 * i)) : in.getInt(4 + 4 * (i - 1)) + bytes.length;
            if (i == lo + 1) {
                offset = split + bytes.length;
            }
            out.putInt(offset);
        }
        if (n > 0) {
            out.put(state, data, split);
        }
        out.put(bytes);
        if (n > 0) {
            out.put(state, data + split, used - split);
        }
        return out.array();
    }

    // -- HyperLogLog -----------------------------------------------------------------------------

    /** 64-bit FNV-1a of the UTF-8 bytes, finished with MurmurHash3's fmix64 (every bit mixed). */
    static long hash(String value) {
        long h = 0xcbf29ce484222325L;
        for (byte b : value.getBytes(StandardCharsets.UTF_8)) {
            h ^= (b & 0xff);
            h *= 0x100000001b3L;
        }
        h ^= h >>> 33;
        h *= 0xff51afd7ed558ccdL;
        h ^= h >>> 33;
        h *= 0xc4ceb9fe1a85ec53L;
        h ^= h >>> 33;
        return h;
    }

    private static byte[] addHash(byte[] state, long h) {
        if (state == null) {
            return ByteBuffer.allocate(9).put(HASHES).putLong(h).array();
        }
        if (state[0] == REGISTERS) {
            register(state, h);
            return state;
        }
        int n = (state.length - 1) / 8;
        ByteBuffer in = ByteBuffer.wrap(state, 1, state.length - 1);
        int lo = 0;
        int hi = n - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            long v = in.getLong(1 + mid * 8);
            if (v < h) {
                lo = mid + 1;
            } else if (v > h) {
                hi = mid - 1;
            } else {
                return state;
            }
        }
        if (n + 1 > EXACT_HASHES) {
            byte[] dense = new byte[M + 1];
            dense[0] = REGISTERS;
            for (int i = 0; i < n; i++) {
                register(dense, in.getLong(1 + i * 8));
            }
            register(dense, h);
            return dense;
        }
        byte[] out = new byte[state.length + 8];
        out[0] = HASHES;
        System.arraycopy(state, 1, out, 1, lo * 8);
        ByteBuffer.wrap(out).putLong(1 + lo * 8, h);
        System.arraycopy(state, 1 + lo * 8, out, 1 + (lo + 1) * 8, (n - lo) * 8);
        return out;
    }

    private static void register(byte[] dense, long h) {
        int index = (int) (h >>> (64 - P));
        int rank = Long.numberOfLeadingZeros((h << P) | (1L << (P - 1))) + 1;
        if (rank > dense[1 + index]) {
            dense[1 + index] = (byte) rank;
        }
    }

    private static byte[] mergeHll(byte[] a, byte[] b) {
        if (a[0] == HASHES && b[0] == HASHES) { // both sorted: one ordered pass
            ByteBuffer x = ByteBuffer.wrap(a);
            ByteBuffer y = ByteBuffer.wrap(b);
            int n = (a.length - 1) / 8;
            int m = (b.length - 1) / 8;
            long[] union = new long[n + m];
            int count = 0;
            int i = 0;
            int j = 0;
            while (i < n || j < m) {
                long u = i < n ? x.getLong(1 + i * 8) : 0;
                long v = j < m ? y.getLong(1 + j * 8) : 0;
                if (j == m || (i < n && u < v)) {
                    union[count++] = u;
                    i++;
                } else if (i == n || v < u) {
                    union[count++] = v;
                    j++;
                } else {
                    union[count++] = u;
                    i++;
                    j++;
                }
            }
            if (count > EXACT_HASHES) {
                byte[] dense = new byte[M + 1];
                dense[0] = REGISTERS;
                for (int k = 0; k < count; k++) {
                    register(dense, union[k]);
                }
                return dense;
            }
            ByteBuffer out = ByteBuffer.allocate(1 + 8 * count).put(HASHES);
            for (int k = 0; k < count; k++) {
                out.putLong(union[k]);
            }
            return out.array();
        }
        byte[] dense = a[0] == REGISTERS ? a.clone() : b.clone();
        byte[] other = a[0] == REGISTERS ? b : a;
        if (other[0] == HASHES) {
            for (int i = 0; i < (other.length - 1) / 8; i++) {
                register(dense, ByteBuffer.wrap(other).getLong(1 + i * 8));
            }
        } else {
            for (int i = 1; i <= M; i++) {
                dense[i] = (byte) Math.max(dense[i], other[i]);
            }
        }
        return dense;
    }

    // -- DDSketch --------------------------------------------------------------------------------

    /**
     * The bucket of a value: positive values at index ⌈log_γ(x)⌉ + 1 (≥ 1 for x ≥ 1), shifted above
     * every negative and zero bucket so that one sorted list of (index, count) is in value order.
     */
    static int indexOf(double value) {
        if (Math.abs(value) < MIN_INDEXABLE) {
            return 0;
        }
        int k = (int) Math.ceil(Math.log(Math.abs(value)) / LOG_GAMMA);
        // k of |x| ≥ 1e-9 is at least -1040; 1 << 20 keeps positives above zero, negatives below
        return value > 0 ? (1 << 20) + k : -(1 << 20) - k;
    }

    static double valueOf(int index) {
        if (index == 0) {
            return 0.0;
        }
        int k = index > 0 ? index - (1 << 20) : -index - (1 << 20);
        double magnitude = 2 * Math.pow(GAMMA, k) / (GAMMA + 1);
        return index > 0 ? magnitude : -magnitude;
    }

    private static byte[] addValue(byte[] state, double value, long count) {
        if (Double.isNaN(value) || Double.isInfinite(value)) {
            return state;
        }
        return addIndex(state, indexOf(value), count);
    }

    private static byte[] addIndex(byte[] state, int index, long count) {
        if (state == null) {
            return ByteBuffer.allocate(12).putInt(index).putLong(count).array();
        }
        int n = state.length / 12;
        ByteBuffer buf = ByteBuffer.wrap(state);
        int lo = 0;
        int hi = n - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            int v = buf.getInt(mid * 12);
            if (v < index) {
                lo = mid + 1;
            } else if (v > index) {
                hi = mid - 1;
            } else {
                buf.putLong(mid * 12 + 4, buf.getLong(mid * 12 + 4) + count);
                return state;
            }
        }
        byte[] out = new byte[state.length + 12];
        System.arraycopy(state, 0, out, 0, lo * 12);
        ByteBuffer.wrap(out).putInt(lo * 12, index).putLong(lo * 12 + 4, count);
        System.arraycopy(state, lo * 12, out, (lo + 1) * 12, (n - lo) * 12);
        return out;
    }
}
