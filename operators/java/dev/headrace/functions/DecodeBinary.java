package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.types.DataType;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

/**
 * {@code hr_decode(payload, spec)}: the decoding step for binary formats, in the JVM.
 *
 * <p>The result row is that of {@code hr_validate} ({@link RecordCheck#rowType}), so the SQL
 * around it is the same for every format. The spec is a literal: {@code {"body":
 * "dev.headrace.functions.AvroBody" (the format's {@link Body}, by class name), "wire":
 * "plain"|"confluent", "reader": <schema>, "writers": {"<id>": <schema>}, "subject": "...",
 * "event_time": "ts", "max_future_ms": ..., "max_future": "1d", "fields": [["tenant_id",
 * "string"], ...], "max_bytes": N}}.
 *
 * <p>With {@code wire: confluent} each record is the magic byte 0, a 4-byte big-endian schema id
 * and the data written with that schema; the writer schemas the registry had when the job was
 * compiled come in the spec, each resolved against the reader schema once. A record naming
 * another id is a dead letter that says so. With {@code plain} the data was written with the
 * reader schema itself.
 */
public final class DecodeBinary extends RecordFunction<DecodeBinary.Decoding> {
    private static final long serialVersionUID = 1L;
    private static final ConcurrentHashMap<String, Decoding> DECODINGS = new ConcurrentHashMap<>();

    @Override
    String functionName() {
        return "hr_decode";
    }

    @Override
    Decoding compiled(String spec) {
        return DECODINGS.computeIfAbsent(spec, Decoding::parse);
    }

    @Override
    DataType rowType(Decoding decoding) {
        return RecordCheck.rowType(decoding.names, decoding.kinds, decoding.outputs);
    }

    @Override
    RowData answer(Decoding decoding, Json.Slice bytes) {
        return decoding.decode(bytes);
    }

    /** One spec, compiled: immutable and shared by every task of the JVM. */
    static final class Decoding {
        private static final int MAX_MESSAGE = 2000;
        private final boolean confluent;
        private final Body body;
        private final String subject;
        final String[] names;
        final char[] kinds;
        private final int eventSlot; // the event-time field's slot (it is always decoded)
        private final String eventTime;
        private final long maxFutureMs;
        private final String maxFutureText;
        private final long maxBytes;
        private final RegistryLookup lookup; // wire: confluent with a registry: run-time refresh and lookups
        final int outputs; // fields in the row (the event-time slot may be extra)

        private Decoding(JsonNode root) {
            List<String> wanted = new ArrayList<>();
            StringBuilder kindText = new StringBuilder();
            for (JsonNode f : root.get("fields")) {
                wanted.add(f.get(0).asText());
                kindText.append(f.get(1).asText().charAt(0)); // string, integer, number, boolean
            }
            outputs = wanted.size();
            eventTime = root.get("event_time").asText();
            int slot = wanted.indexOf(eventTime);
            if (slot < 0) {
                wanted.add(eventTime);
                kindText.append('i');
                slot = wanted.size() - 1;
            }
            eventSlot = slot;
            names = wanted.toArray(new String[0]);
            kinds = kindText.toString().toCharArray();
            maxFutureMs = root.has("max_future_ms") ? root.get("max_future_ms").asLong() : Long.MAX_VALUE;
            maxFutureText = root.has("max_future") ? root.get("max_future").asText() : "unbounded";
            maxBytes = root.has("max_bytes") ? root.get("max_bytes").asLong() : Long.MAX_VALUE;
            confluent = "confluent".equals(root.path("wire").asText("plain"));
            subject = root.path("subject").asText("");
            body = Body.of(root.get("body").asText(), root, names, kinds);
            lookup = confluent ? RegistryLookup.of(root) : null;
        }

        static Decoding parse(String spec) {
            try {
                return new Decoding(RecordCheck.MAPPER.readTree(spec));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        RowData fail(String path, String message) {
            GenericRowData row = new GenericRowData(3 + outputs);
            row.setField(0, StringData.fromString(path));
            row.setField(1, StringData.fromString(message.length() > MAX_MESSAGE
                    ? message.substring(0, MAX_MESSAGE) : message));
            return row;
        }

        /** Never throws: a record it cannot decode is a dead letter saying why. */
        RowData decode(Json.Slice bytes) {
            if (bytes == null) {
                return fail("/", "empty record");
            }
            try {
                return decodeOrThrow(bytes);
            } catch (DecodeError e) {
                return fail(e.pointer(), e.getMessage());
            } catch (RuntimeException e) {
                return fail("/", "cannot decode the record: " + e);
            }
        }

        private RowData decodeOrThrow(Json.Slice bytes) throws DecodeError {
            int from = bytes.offset;
            int end = bytes.offset + bytes.length;
            if (bytes.length == 0) {
                throw new DecodeError("empty record");
            }
            if (bytes.length > maxBytes) {
                throw new DecodeError("record of " + bytes.length + " bytes is over the limit of " + maxBytes
                        + " (source.format.max_record_bytes)");
            }
            Integer id = null;
            if (confluent) {
                id = Framing.schemaId(bytes.data, from, bytes.length);
                if (lookup != null) {
                    long now = System.currentTimeMillis();
                    lookup.maybeRefresh(body, now);
                    if (!body.knows(id) && !lookup.lookUp(id, body, now)) {
                        throw Framing.unknown(id, subject, body.ids(), lookup.note(id));
                    }
                } else if (!body.knows(id)) {
                    throw Framing.unknown(id, subject, body.ids(), "");
                }
                from += Framing.HEADER;
            }
            Object[] values = new Object[names.length];
            body.decode(id, bytes.data, bytes.offset, from, end, values);
            GenericRowData row = new GenericRowData(3 + outputs);
            Long millis = (Long) values[eventSlot];
            if (millis == null) {
                throw new DecodeError("the record has no event time").at(eventTime);
            }
            String why = EventTimes.outOfRange(millis, maxFutureMs, maxFutureText, System.currentTimeMillis());
            if (why != null) {
                return fail(SchemaNode.pointer("", eventTime), why);
            }
            row.setField(2, millis);
            for (int i = 0; i < outputs; i++) {
                row.setField(3 + i, values[i]);
            }
            return row;
        }
    }

    /**
     * A binary format's part: the data after the framing, decoded into the output slots. Each
     * format's module names its class in the spec ({@code "body"}); the class has a constructor
     * {@code (JsonNode spec, String[] names, char[] kinds)}.
     */
    interface Body extends RegistryLookup.Writers {
        static Body of(String className, JsonNode spec, String[] names, char[] kinds) {
            try {
                Class<?> type = Class.forName(className, true, DecodeBinary.class.getClassLoader());
                if (!Body.class.isAssignableFrom(type)) {
                    throw new IllegalArgumentException("hr_decode: " + className + " is not a DecodeBinary.Body");
                }
                return (Body) type.getDeclaredConstructor(JsonNode.class, String[].class, char[].class)
                        .newInstance(spec, names, kinds);
            } catch (java.lang.reflect.InvocationTargetException e) {
                Throwable cause = e.getCause();
                throw cause instanceof RuntimeException ? (RuntimeException) cause : new IllegalStateException(cause);
            } catch (ReflectiveOperationException e) {
                throw new IllegalArgumentException("hr_decode: no decoder class " + className + ": " + e, e);
            }
        }

        /** Whether records may name schema {@code id} (the writers the registry had). */
        boolean knows(int id);

        /** The known ids, for the unknown-id message. */
        java.util.SortedSet<Integer> ids();

        /** Decode {@code data[from, end)} ({@code id}: the framing's schema id, or null when plain). */
        void decode(Integer id, byte[] data, int base, int from, int end, Object[] out) throws DecodeError;
    }
}
