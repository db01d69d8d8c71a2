package dev.headrace.functions;

import org.apache.flink.core.memory.MemorySegment;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.util.JsonRecyclerPools;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.binary.BinaryStringData;

import java.io.IOException;
import java.util.Arrays;
import java.util.Objects;

/** Parsing records straight from Flink's UTF-8 string bytes, without a java.lang.String. */
final class Json {
    private Json() {
    }

    /**
     * A factory for one task thread. Its buffer pool is lock-free and its own: Jackson's default
     * pool is a ThreadLocal lookup per parser, which showed up as ~5% of the source thread.
     */
    static JsonFactory factory() {
        return new JsonFactory().setRecyclerPool(JsonRecyclerPools.newLockFreePool());
    }

    /** The UTF-8 bytes of a string: a view of Flink's own buffer when it is one heap array. */
    static final class Slice {
        byte[] data;
        int offset;
        int length;

        Slice of(StringData text) {
            if (text instanceof BinaryStringData) {
                BinaryStringData binary = (BinaryStringData) text;
                MemorySegment[] segments = binary.getSegments();
                if (segments != null && segments.length == 1 && !segments[0].isOffHeap()) {
                    data = segments[0].getHeapMemory();
                    offset = binary.getOffset();
                    length = binary.getSizeInBytes();
                    return this;
                }
            }
            data = text.toBytes();
            offset = 0;
            length = data.length;
            return this;
        }

        /** Whether the slice holds the byte {@code b}. */
        boolean holds(byte b) {
            for (int i = offset, end = offset + length; i < end; i++) {
                if (data[i] == b) {
                    return true;
                }
            }
            return false;
        }

        /** The bytes of the slice, copied. */
        byte[] copy() {
            return Arrays.copyOfRange(data, offset, offset + length);
        }

        /** Whether the slice holds exactly {@code other} (a vectorized compare). */
        boolean sameAs(byte[] other) {
            return other != null && other.length == length
                    && Arrays.equals(other, 0, other.length, data, offset, offset + length);
        }
    }

    static JsonParser parser(JsonFactory factory, Slice bytes) throws IOException {
        return factory.createParser(bytes.data, bytes.offset, bytes.length);
    }

    /** A JSON number as epoch milliseconds: integral, or a double with no fraction (5.0). */
    static Long exactLong(double d) {
        return d == Math.rint(d) && Math.abs(d) < 9.0e15 ? (long) d : null;
    }

    /**
     * The answer for one payload, kept so that the planner's repeated calls of a function on the
     * same record (see ValidateJson, EventTime) parse it once. Immutable, so it may be shared
     * between task threads and read racily: a thread overwriting another's entry only causes a
     * miss, never a wrong answer, since the answer depends on {@code owner} (the check, or the
     * field read; compared with equals) and the bytes alone.
     * The payload is a copy: a source may reuse the buffer behind it once it has moved on.
     */
    static final class Memo<T> {
        static final Memo<?> EMPTY = new Memo<>(null, new Slice(), null);

        private final Object owner;
        private final byte[] payload;
        final T value;

        Memo(Object owner, Slice bytes, T value) {
            this.owner = owner;
            this.payload = bytes.data == null ? null : bytes.copy();
            this.value = value;
        }

        boolean answers(Object owner, Slice bytes) {
            return Objects.equals(this.owner, owner) && bytes.sameAs(payload);
        }

        @SuppressWarnings("unchecked")
        static <T> Memo<T> empty() {
            return (Memo<T>) EMPTY;
        }
    }

    /** The top-level field {@code field} of a JSON object, as text when it is a string or an
     * integer, else null (also when the bytes are not a JSON object): a record's enrich key.
     * {@code factory}: the calling thread's own ({@link #factory()}). */
    static String topLevelKey(JsonFactory factory, byte[] value, String field) {
        if (value == null) {
            return null;
        }
        String quick = scannedKey(value, field);
        return quick != UNSURE ? quick : parsedKey(factory, value, field);
    }

    /** {@link #topLevelKey} by the parser alone. */
    static String parsedKey(JsonFactory factory, byte[] value, String field) {
        try (JsonParser parser = factory.createParser(value)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            for (JsonToken t = parser.nextToken(); t == JsonToken.FIELD_NAME; t = parser.nextToken()) {
                boolean wanted = field.equals(parser.getCurrentName());
                JsonToken v = parser.nextToken();
                if (wanted) {
                    return v == JsonToken.VALUE_STRING || v == JsonToken.VALUE_NUMBER_INT ? parser.getText() : null;
                }
                parser.skipChildren();
            }
        } catch (IOException e) { // not JSON: the record's own lookup (or its dead letter) deals with it
            return null;
        }
        return null;
    }

    /** {@link #scannedKey}'s answer when only a parser can tell (compared by identity). */
    private static final String UNSURE = new String("unsure");

    /** Whether {@link #scannedKey} left the record to the parser. */
    static boolean isUnsure(String scanned) {
        return scanned == UNSURE;
    }

    /**
     * {@link #topLevelKey} by a scan of the bytes, for the records most are: ASCII, no escapes,
     * numbers plain. {@link #UNSURE} for anything else (an escape, a byte past ASCII, a control
     * character, a leading zero, the end of the bytes), which the parser then reads. A parser per
     * record was most of the Kafka fetcher's work in a job that reads keys ahead.
     *
     * <p>The values it passes over on the way to the key are skipped, not checked: for a record that
     * is not JSON there (a bare word, a bracket that does not match) it can name a key where the
     * parser names none. The key is only read ahead (EnrichPrefetch): such a record costs one
     * lookup ahead of time, and its own lookup and dead letter come from its decoding as before.
     */
    static String scannedKey(byte[] b, String field) {
        for (int k = 0; k < field.length(); k++) {
            char c = field.charAt(k);
            if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
                return UNSURE; // a name the scan cannot compare byte for byte
            }
        }
        int n = b.length;
        int i = skipSpace(b, 0);
        if (i >= n || b[i] != '{') {
            return UNSURE;
        }
        i++;
        while (true) {
            i = skipSpace(b, i);
            if (i >= n) {
                return UNSURE;
            }
            if (b[i] == '}') {
                return null;
            }
            if (b[i] != '"') {
                return UNSURE;
            }
            int start = i + 1;
            i = plainStringEnd(b, start);
            if (i < 0) {
                return UNSURE;
            }
            boolean wanted = sameAscii(b, start, i, field);
            i = skipSpace(b, i + 1);
            if (i >= n || b[i] != ':') {
                return UNSURE;
            }
            i = skipSpace(b, i + 1);
            if (i >= n) {
                return UNSURE;
            }
            if (wanted) {
                return scannedValue(b, i);
            }
            i = skipValue(b, i);
            if (i < 0) {
                return UNSURE;
            }
            i = skipSpace(b, i);
            if (i >= n) {
                return UNSURE;
            }
            if (b[i] == '}') {
                return null;
            }
            if (b[i] != ',') {
                return UNSURE;
            }
            i++;
        }
    }

    /** The wanted field's value at {@code i}: a string's text, an integer's digits, else null. */
    private static String scannedValue(byte[] b, int i) {
        int n = b.length;
        if (b[i] == '"') {
            int start = i + 1;
            int end = plainStringEnd(b, start);
            return end < 0 ? UNSURE : new String(b, start, end - start, java.nio.charset.StandardCharsets.US_ASCII);
        }
        if (b[i] != '-' && (b[i] < '0' || b[i] > '9')) {
            return null; // an object, an array, true, false, null (or not JSON): no key
        }
        int start = i;
        if (b[i] == '-') {
            i++;
        }
        int digits = i;
        while (i < n && b[i] >= '0' && b[i] <= '9') {
            i++;
        }
        if (i == digits || i >= n || (b[digits] == '0' && i - digits > 1)) {
            return UNSURE;
        }
        if (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
            return null; // not an integer
        }
        if (b[i] != ',' && b[i] != '}' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r') {
            return UNSURE;
        }
        return new String(b, start, i - start, java.nio.charset.StandardCharsets.US_ASCII);
    }

    /** The index after the value at {@code i}, or -1 when the bytes end inside it. */
    private static int skipValue(byte[] b, int i) {
        int n = b.length;
        int depth = 0;
        while (i < n) {
            byte c = b[i];
            if (c == '"') {
                i++;
                while (i < n && b[i] != '"') {
                    i += b[i] == '\\' ? 2 : 1;
                }
                if (i >= n) {
                    return -1;
                }
                i++;
            } else if (c == '{' || c == '[') {
                depth++;
                i++;
            } else if (c == '}' || c == ']') {
                if (depth == 0) {
                    return i;
                }
                depth--;
                i++;
            } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
                return i;
            } else {
                i++;
            }
            if (depth == 0 && (c == '"' || c == '}' || c == ']')) {
                return i;
            }
        }
        return -1;
    }

    /** The index of the quote closing a string whose text starts at {@code i}, or -1 when the text
     * holds an escape, a control character or a byte past ASCII (negative), or the bytes end. */
    private static int plainStringEnd(byte[] b, int i) {
        while (i < b.length && b[i] != '"') {
            if (b[i] == '\\' || b[i] < 0x20) {
                return -1;
            }
            i++;
        }
        return i < b.length ? i : -1;
    }

    private static int skipSpace(byte[] b, int i) {
        while (i < b.length && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) {
            i++;
        }
        return i;
    }

    private static boolean sameAscii(byte[] b, int from, int to, String field) {
        if (to - from != field.length()) {
            return false;
        }
        for (int k = 0; k < field.length(); k++) {
            if (b[from + k] != field.charAt(k)) {
                return false;
            }
        }
        return true;
    }
}
