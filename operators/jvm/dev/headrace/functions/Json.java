package dev.headrace.functions;

import org.apache.flink.core.memory.MemorySegment;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.util.JsonRecyclerPools;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.binary.BinaryStringData;

import java.io.IOException;
import java.util.Arrays;

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
}
