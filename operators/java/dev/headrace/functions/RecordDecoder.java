package dev.headrace.functions;

import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;

/**
 * The decoding step's JVM part, as the source uses it ({@code dev.headrace.connectors.RecordSource}):
 * one raw record in, its row {@code (err_path, err_msg, event_ms, field...)} out, never an
 * exception. The same compiled specs as the SQL functions ({@link ValidateJson} for JSON,
 * {@link DecodeBinary} for Avro and Protobuf), and an event-time-only one ({@link EventTime}) for
 * jobs whose records are checked later, in Python.
 *
 * <p>The source decodes each record once, where its watermark reads the event time, and its
 * judging operator takes the fields from that same decoding ({@link #decodeOnce}): both run in the
 * source task's thread, back to back on the same record object.
 */
public interface RecordDecoder {
    /** The row for {@code payload} (null: a record without a value). */
    RowData decode(StringData payload);

    /** How many typed fields follow the error fields and the event time. */
    int fieldCount();

    /**
     * Whether a decoded string holds U+0000, from its UTF-8 bytes where they lie (no copy, no
     * decoding: U+0000 is the byte 0 in UTF-8, and no other character contains that byte).
     */
    static boolean hasNul(StringData text) {
        return new Json.Slice().of(text).holds((byte) 0);
    }

    /** The decoder named by a function class ({@code dev.headrace.functions.ValidateJson}, …) and its spec. */
    static RecordDecoder of(String function, String spec) {
        switch (function.substring(function.lastIndexOf('.') + 1)) {
            case "ValidateJson": {
                RecordCheck check = RecordCheck.parse(spec);
                int count = check.rowType().getChildren().size() - 3;
                return new RecordDecoder() {
                    private final Json.Slice bytes = new Json.Slice();

                    @Override
                    public RowData decode(StringData payload) {
                        return check.check(payload == null ? null : bytes.of(payload));
                    }

                    @Override
                    public int fieldCount() {
                        return count;
                    }
                };
            }
            case "DecodeBinary": {
                DecodeBinary.Decoding decoding = DecodeBinary.Decoding.parse(spec);
                return new RecordDecoder() {
                    private final Json.Slice bytes = new Json.Slice();

                    @Override
                    public RowData decode(StringData payload) {
                        return decoding.decode(payload == null ? null : bytes.of(payload));
                    }

                    @Override
                    public int fieldCount() {
                        return decoding.outputs;
                    }
                };
            }
            case "EventTime": {
                org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode root;
                try {
                    root = RecordCheck.MAPPER.readTree(spec);
                } catch (java.io.IOException e) {
                    throw new IllegalArgumentException("event-time spec is not JSON: " + e.getMessage());
                }
                String field = root.get("event_time").asText();
                long maxFuture = root.path("max_future_ms").asLong(Long.MAX_VALUE);
                EventTime reader = new EventTime();
                reader.open(null);
                return new RecordDecoder() {
                    @Override
                    public RowData decode(StringData payload) {
                        GenericRowData row = new GenericRowData(3);
                        row.setField(2, reader.eval(payload, field, maxFuture));
                        return row;
                    }

                    @Override
                    public int fieldCount() {
                        return 0;
                    }
                };
            }
            default:
                throw new IllegalArgumentException("no record decoder " + function);
        }
    }

    /** The last record decoded in this thread, with its payload and row: see {@link #decodeOnce}. */
    final class Last {
        public Object record;
        public StringData payload;
        public RowData row;
    }

    ThreadLocal<Last> LAST = ThreadLocal.withInitial(Last::new);

    /**
     * A caller's handle on {@link #LAST} for the thread that calls it: the thread's entry is looked
     * up once, not per record (a ThreadLocal lookup per record and caller showed in the source
     * task's profile, probing a task thread's crowded ThreadLocal map).
     */
    final class Mine {
        private Thread owner;
        private Last last;

        public Last get() {
            Thread now = Thread.currentThread();
            if (now != owner) {
                last = LAST.get();
                owner = now;
            }
            return last;
        }
    }

    /**
     * {@code decode(payload)} of {@code record}, or the row this thread decoded for that very
     * record object last (the watermark's timestamp assigner decodes it, the judging operator
     * chained after the source asks again); the payload it read stays in {@link Last#payload}.
     */
    static RowData decodeOnce(RecordDecoder decoder, Object record, java.util.function.Supplier<StringData> payload,
                              Last last) {
        if (last.record == record && record != null) {
            return last.row;
        }
        StringData bytes = payload.get();
        RowData row = decoder.decode(bytes);
        last.record = record;
        last.payload = bytes;
        last.row = row;
        return row;
    }
}
