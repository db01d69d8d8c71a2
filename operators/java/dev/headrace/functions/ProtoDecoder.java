package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.table.data.StringData;

import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.SortedSet;
import java.util.TreeSet;

/**
 * Reads Protobuf binary data (proto3) with the job's message descriptor, into the typed top-level
 * fields a job reads. Fields are matched by number, so data written with an older or newer
 * version of the message is read as Protobuf itself reads it: unknown fields skipped, absent ones
 * at their defaults ({@code optional} and {@code oneof} members, and message fields, null). Nested
 * messages, repeated and map fields are decoded and checked (wire types, lengths, UTF-8) but not
 * kept. {@code google.protobuf.Timestamp} is read as epoch milliseconds.
 *
 * <p>The descriptors come in the spec from {@code operators/protobuf.py}, compiled from the .proto
 * by protoc: {@code "messages": {"pkg.Msg": [[number, name, type, repeated, type_name, nullable],
 * ...]}, "enums": {"pkg.Enum": {"0": "NAME"}}}, with field types numbered as in
 * {@code FieldDescriptorProto.Type}.
 */
final class ProtoDecoder {
    private static final int MAX_DEPTH = 100;
    private static final String TIMESTAMP = "google.protobuf.Timestamp";

    // FieldDescriptorProto.Type
    private static final int DOUBLE = 1, FLOAT = 2, INT64 = 3, UINT64 = 4, INT32 = 5, FIXED64 = 6, FIXED32 = 7,
            BOOL = 8, STRING = 9, GROUP = 10, MESSAGE = 11, BYTES = 12, UINT32 = 13, ENUM = 14, SFIXED32 = 15,
            SFIXED64 = 16, SINT32 = 17, SINT64 = 18;

    private ProtoDecoder() {
    }

    static final class Field {
        final int number;
        final String name;
        final int type;
        final boolean repeated;
        final boolean nullable;
        Message message; // MESSAGE fields
        Map<Integer, StringData> symbols; // ENUM fields
        final String typeName;
        int slot = -1; // the output slot (top-level fields the job reads)
        char kind; // what the slot holds

        Field(JsonNode f) {
            number = f.get(0).asInt();
            name = f.get(1).asText();
            type = f.get(2).asInt();
            repeated = f.get(3).asBoolean();
            typeName = f.get(4).asText();
            nullable = f.get(5).asBoolean();
        }

        int wireType() {
            switch (type) {
                case DOUBLE: case FIXED64: case SFIXED64: return 1;
                case FLOAT: case FIXED32: case SFIXED32: return 5;
                case STRING: case BYTES: case MESSAGE: return 2;
                case GROUP: return 3;
                default: return 0;
            }
        }
    }

    static final class Message {
        final String name;
        final Map<Integer, Field> byNumber = new HashMap<>();

        Message(String name) {
            this.name = name;
        }
    }

    /** The job's message and the writers' message indexes: the body of {@link DecodeBinary}. */
    static final class Messages implements DecodeBinary.Body {
        private final Message root;
        private final Field[] kept; // fields with an output slot
        private final Object[] defaults;
        private final Map<Integer, int[]> indexesById = new ConcurrentHashMap<>();
        private final Map<Integer, String> missing = new ConcurrentHashMap<>(); // ids with no such message

        Messages(JsonNode spec, String[] names, char[] kinds) {
            Map<String, Message> messages = new HashMap<>();
            Map<String, Map<Integer, StringData>> enums = new HashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = spec.path("enums").fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                Map<Integer, StringData> values = new HashMap<>();
                for (Iterator<Map.Entry<String, JsonNode>> v = e.getValue().fields(); v.hasNext(); ) {
                    Map.Entry<String, JsonNode> value = v.next();
                    values.putIfAbsent(Integer.parseInt(value.getKey()), StringData.fromString(value.getValue().asText()));
                }
                enums.put(e.getKey(), values);
            }
            for (Iterator<String> it = spec.path("messages").fieldNames(); it.hasNext(); ) {
                String name = it.next();
                messages.put(name, new Message(name));
            }
            for (Message m : messages.values()) {
                for (JsonNode f : spec.path("messages").get(m.name)) {
                    Field field = new Field(f);
                    field.message = messages.get(field.typeName);
                    field.symbols = enums.get(field.typeName);
                    m.byNumber.put(field.number, field);
                }
            }
            root = messages.get(spec.get("message").asText());
            if (root == null) {
                throw new IllegalArgumentException("hr_decode: no message " + spec.get("message"));
            }
            List<String> wanted = Arrays.asList(names);
            Field[] slots = new Field[names.length];
            for (Field f : root.byNumber.values()) {
                int slot = wanted.indexOf(f.name);
                if (slot >= 0 && !f.repeated) {
                    f.slot = slot;
                    f.kind = kinds[slot];
                    slots[slot] = f;
                }
            }
            kept = Arrays.stream(slots).filter(f -> f != null).toArray(Field[]::new);
            defaults = new Object[names.length];
            for (Field f : kept) {
                defaults[f.slot] = f.nullable ? null : zero(f);
            }
            for (Iterator<Map.Entry<String, JsonNode>> it = spec.path("writers").fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                int id = Integer.parseInt(e.getKey());
                JsonNode path = e.getValue();
                if (path.isArray()) {
                    int[] indexes = new int[path.size()];
                    for (int i = 0; i < indexes.length; i++) {
                        indexes[i] = path.get(i).asInt();
                    }
                    indexesById.put(id, indexes);
                } else {
                    missing.put(id, path.asText("it does not define " + root.name));
                }
            }
        }

        @Override
        public boolean knows(int id) {
            return indexesById.containsKey(id) || missing.containsKey(id);
        }

        @Override
        public void add(int id, String schemaType, String schema) {
            if (!"PROTOBUF".equals(schemaType)) {
                missing.put(id, "it is a " + schemaType + " schema, not Protobuf");
                return;
            }
            int[] indexes = ProtoNames.indexes(schema, root.name);
            if (indexes == null) {
                missing.put(id, "it does not define " + root.name);
            } else {
                indexesById.put(id, indexes);
            }
        }

        @Override
        public SortedSet<Integer> ids() {
            SortedSet<Integer> ids = new TreeSet<>(indexesById.keySet());
            ids.addAll(missing.keySet());
            return ids;
        }

        @Override
        public void decode(Integer id, byte[] data, int base, int from, int end, Object[] out) throws DecodeError {
            Cursor c = new Cursor(data, from, end, base);
            if (id != null) {
                int[] expected = indexesById.get(id);
                if (expected == null) {
                    throw new DecodeError("schema id " + id + " cannot be read as " + root.name + ": " + missing.get(id));
                }
                int[] indexes = c.messageIndexes();
                if (!Arrays.equals(indexes, expected)) {
                    throw new DecodeError("message indexes " + Arrays.toString(indexes) + " of schema id " + id
                            + " name another message than " + root.name + " (it is " + Arrays.toString(expected) + ")");
                }
            }
            System.arraycopy(defaults, 0, out, 0, out.length);
            read(c, root, c.end, out, 0);
        }
    }

    private static Object zero(Field f) {
        switch (f.kind) {
            case 's':
                if (f.type == ENUM) {
                    StringData first = f.symbols == null ? null : f.symbols.get(0);
                    return first != null ? first : StringData.fromString("0");
                }
                return StringData.fromString("");
            case 'i':
                return f.type == MESSAGE ? null : 0L;
            case 'n':
                return 0.0;
            default:
                return false;
        }
    }

    /** The Protobuf wire format from {@code c.pos} to {@code end}; keeps fields with a slot into {@code out}. */
    private static void read(Cursor c, Message m, int end, Object[] out, int depth) throws DecodeError {
        if (depth > MAX_DEPTH) {
            throw new DecodeError("messages nested deeper than " + MAX_DEPTH);
        }
        while (c.pos < end) {
            int tagAt = c.pos;
            long tag = c.tag(end);
            long number = tag >>> 3;
            int wire = (int) (tag & 7);
            Field f = m.byNumber.get((int) number);
            if (f == null) {
                c.skip(wire, end, tagAt);
                continue;
            }
            try {
                if (wire != f.wireType()) {
                    if (wire == 2 && f.repeated && f.wireType() != 2) { // packed repeated scalars
                        int n = c.length(end);
                        int stop = c.pos + n;
                        while (c.pos < stop) {
                            scalar(c, f, stop, false);
                        }
                        continue;
                    }
                    throw new DecodeError("field " + f.number + " ('" + f.name + "') has wire type " + wire
                            + " at offset " + c.at(tagAt) + ", but its type needs wire type " + f.wireType());
                }
                if (f.type == MESSAGE) {
                    int n = c.length(end);
                    int stop = c.pos + n;
                    boolean keep = f.slot >= 0 && out != null;
                    if (TIMESTAMP.equals(f.typeName)) {
                        long ms = timestamp(c, stop);
                        if (keep) {
                            out[f.slot] = ms;
                        }
                    } else if (f.message != null) {
                        read(c, f.message, stop, null, depth + 1);
                    } else {
                        c.pos = stop; // a message type the descriptors do not carry (cannot happen from protoc)
                    }
                    continue;
                }
                Object value = scalar(c, f, end, f.slot >= 0 && out != null);
                if (f.slot >= 0 && out != null) {
                    out[f.slot] = value;
                }
            } catch (DecodeError bad) {
                throw bad.at(f.name);
            }
        }
        if (c.pos != end) {
            throw new DecodeError("a field runs past the end of its message");
        }
    }

    private static long timestamp(Cursor c, int stop) throws DecodeError {
        long seconds = 0;
        long nanos = 0;
        while (c.pos < stop) {
            int tagAt = c.pos;
            long tag = c.tag(stop);
            int wire = (int) (tag & 7);
            if (tag >>> 3 == 1 && wire == 0) {
                seconds = c.varint(stop);
            } else if (tag >>> 3 == 2 && wire == 0) {
                nanos = (int) c.varint(stop);
            } else {
                c.skip(wire, stop, tagAt);
            }
        }
        if (nanos < 0 || nanos > 999_999_999L) {
            throw new DecodeError("Timestamp nanos " + nanos + " is outside 0..999999999");
        }
        if (Math.abs(seconds) > 9_000_000_000_000_000L / 1000) {
            throw new DecodeError("Timestamp seconds " + seconds + " does not fit in epoch milliseconds");
        }
        return seconds * 1000 + nanos / 1_000_000;
    }

    /** One scalar value of {@code f} (its own wire type), converted for the slot when {@code keep}. */
    private static Object scalar(Cursor c, Field f, int end, boolean keep) throws DecodeError {
        switch (f.type) {
            case INT64: case UINT64: case INT32: case UINT32: case SINT32: case SINT64: case BOOL: case ENUM: {
                long v = c.varint(end);
                if (!keep) {
                    return null;
                }
                switch (f.type) {
                    case UINT64:
                        if (v < 0) {
                            throw new DecodeError(Long.toUnsignedString(v) + " does not fit in a 64-bit integer");
                        }
                        return v;
                    case INT32: return (long) (int) v;
                    case UINT32: return v & 0xFFFF_FFFFL;
                    case SINT32: return (long) (((int) v >>> 1) ^ -((int) v & 1));
                    case SINT64: return (v >>> 1) ^ -(v & 1);
                    case BOOL: return v != 0;
                    case ENUM: {
                        StringData symbol = f.symbols == null ? null : f.symbols.get((int) v);
                        return symbol != null ? symbol : StringData.fromString(Long.toString((int) v));
                    }
                    default: return v;
                }
            }
            case FIXED64: case SFIXED64: case DOUBLE: {
                long bits = c.fixed(8, end);
                if (!keep) {
                    return null;
                }
                if (f.type == DOUBLE) {
                    return Double.longBitsToDouble(bits);
                }
                if (f.type == FIXED64 && bits < 0) {
                    throw new DecodeError(Long.toUnsignedString(bits) + " does not fit in a 64-bit integer");
                }
                return bits;
            }
            case FIXED32: case SFIXED32: case FLOAT: {
                int bits = (int) c.fixed(4, end);
                if (!keep) {
                    return null;
                }
                if (f.type == FLOAT) {
                    return (double) Float.intBitsToFloat(bits);
                }
                return f.type == FIXED32 ? bits & 0xFFFF_FFFFL : (long) bits;
            }
            case STRING: case BYTES: {
                int n = c.length(end);
                int start = c.pos;
                c.pos += n;
                if (f.type == STRING) {
                    c.utf8(start, n);
                    return keep ? StringData.fromBytes(Arrays.copyOfRange(c.data, start, start + n)) : null;
                }
                return keep ? StringData.fromString(Base64.getEncoder().encodeToString(
                        Arrays.copyOfRange(c.data, start, start + n))) : null;
            }
            default:
                throw new DecodeError("field type " + f.type + " is not supported");
        }
    }

    /** Where decoding is, with Protobuf's wire-format reads. */
    static final class Cursor extends ByteCursor {
        Cursor(byte[] data, int pos, int end, int base) {
            super(data, pos, end, base);
        }

        long varint(int limit) throws DecodeError {
            int start = pos;
            long value = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                if (pos >= limit) {
                    throw new DecodeError("the record ends early: a varint at offset " + at(start) + " is cut off");
                }
                int b = data[pos++] & 0xFF;
                if (shift == 63 && b > 1) {
                    throw new DecodeError("bad varint at offset " + at(start) + ": more than 64 bits");
                }
                value |= (long) (b & 0x7F) << shift;
                if ((b & 0x80) == 0) {
                    return value;
                }
            }
            throw new DecodeError("bad varint at offset " + at(start) + ": longer than 10 bytes");
        }

        /** A field's tag: its number (1 to 2^29 - 1) and wire type. */
        long tag(int limit) throws DecodeError {
            int start = pos;
            long tag = varint(limit);
            long number = tag >>> 3;
            if (number == 0 || number > 536_870_911L) {
                throw new DecodeError("bad field number " + number + " at offset " + at(start));
            }
            return tag;
        }

        int length(int limit) throws DecodeError {
            int start = pos;
            long n = varint(limit);
            if (n < 0 || n > limit - pos) {
                throw new DecodeError("the record ends early: a length of " + Long.toUnsignedString(n)
                        + " at offset " + at(start) + " but only " + (limit - pos) + " bytes left");
            }
            return (int) n;
        }

        long fixed(int size, int limit) throws DecodeError {
            if (limit - pos < size) {
                throw new DecodeError("the record ends early: " + size + " bytes needed at offset " + at(pos));
            }
            long bits = 0;
            for (int i = size - 1; i >= 0; i--) {
                bits = bits << 8 | (data[pos + i] & 0xFF);
            }
            pos += size;
            return bits;
        }

        void skip(int wire, int limit, int tagAt) throws DecodeError {
            switch (wire) {
                case 0: varint(limit); return;
                case 1: fixed(8, limit); return;
                case 2: {
                    int n = length(limit); // read before the addition: length() moves pos
                    pos += n;
                    return;
                }
                case 5: fixed(4, limit); return;
                default:
                    throw new DecodeError("wire type " + wire + " at offset " + at(tagAt)
                            + (wire == 3 || wire == 4 ? " (a proto2 group) is not supported" : " does not exist"));
            }
        }

        /** Confluent's message indexes: a zigzag count, then zigzag indexes; a lone 0 means [0]. */
        int[] messageIndexes() throws DecodeError {
            int count = zigzag(varint(end));
            if (count == 0) {
                return new int[] {0};
            }
            if (count < 0 || count > 100) {
                throw new DecodeError("bad message index count " + count + " in the Confluent framing");
            }
            int[] out = new int[count];
            for (int i = 0; i < count; i++) {
                out[i] = zigzag(varint(end));
            }
            return out;
        }

        private static int zigzag(long v) {
            return (int) ((v >>> 1) ^ -(v & 1));
        }
    }
}
