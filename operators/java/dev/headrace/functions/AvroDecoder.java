package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.table.data.StringData;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads Avro binary data written with one schema (the writer's) as another (the reader's), by
 * the Avro specification's resolution rules, into the typed top-level fields a job reads.
 *
 * <p>Built once per (writer, reader) pair: resolution is decided here, so that decoding a record
 * is a walk over a small program with no lookups. Fields the job does not read are still decoded
 * (and so checked: lengths, union branches, enum indexes, UTF-8) but not kept. A writer schema
 * the reader cannot read at all makes {@link #problem} non-null; a branch or symbol the reader
 * cannot take fails only the records that hold one, as the specification says.
 */
final class AvroDecoder {
    /** Where decoding is in the record's bytes. */
    static final class Cursor extends ByteCursor {
        Cursor(byte[] data, int pos, int end, int base) {
            super(data, pos, end, base);
        }

        private DecodeError truncated(int needed) {
            return new DecodeError("the record ends early: " + needed + " more byte(s) needed at offset " + at(pos));
        }

        long readLong() throws DecodeError {
            long raw = 0;
            int shift = 0;
            int start = pos;
            while (true) {
                if (pos >= end) {
                    throw truncated(1);
                }
                int b = data[pos++] & 0xFF;
                if (shift == 63 && (b & 0x7E) != 0) {
                    throw new DecodeError("bad varint at offset " + at(start) + ": more than 64 bits");
                }
                raw |= (long) (b & 0x7F) << shift;
                if ((b & 0x80) == 0) {
                    break;
                }
                shift += 7;
                if (shift > 63) {
                    throw new DecodeError("bad varint at offset " + at(start) + ": longer than 10 bytes");
                }
            }
            return (raw >>> 1) ^ -(raw & 1);
        }

        int readInt() throws DecodeError {
            int start = pos;
            long value = readLong();
            if (value < Integer.MIN_VALUE || value > Integer.MAX_VALUE || pos - start > 5) {
                throw new DecodeError("bad varint at offset " + at(start) + ": " + value + " is not a 32-bit int");
            }
            return (int) value;
        }

        int readLength(String what) throws DecodeError {
            int start = pos;
            long n = readLong();
            if (n < 0) {
                throw new DecodeError("negative " + what + " length " + n + " at offset " + at(start));
            }
            if (n > end - pos) {
                throw new DecodeError("the record ends early: " + what + " of " + n + " bytes at offset " + at(start)
                        + " but only " + (end - pos) + " left");
            }
            return (int) n;
        }

        void need(int n) throws DecodeError {
            if (end - pos < n) {
                throw truncated(n - (end - pos));
            }
        }
    }

    /** One resolved value: decoded from the writer's form into the reader's. */
    abstract static class Step {
        /** The value in the reader's type (or null); {@code keep}: the caller wants it. */
        abstract Object read(Cursor c, boolean keep) throws DecodeError;
    }

    private static final class Fail extends Step {
        private final String message;

        Fail(String message) {
            this.message = message;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            throw new DecodeError(message);
        }
    }

    final String problem; // why this writer schema cannot be read as the reader's, or null
    private final Step[] writerFields; // the top-level record, in the writer's field order
    private final int[] slots; // for each writer field: the output slot, or -1
    private final Object[] defaults; // per output slot: the reader's default when the writer lacks it
    private final String[] writerNames;
    private final int slotCount;

    /**
     * @param wanted the reader's top-level field names, in output-slot order
     * @param kinds  per slot: s(tring), i(nteger), n(umber), b(oolean): what the slot holds
     */
    AvroDecoder(AvroSchema writer, AvroSchema reader, String[] wanted, char[] kinds) {
        slotCount = wanted.length;
        defaults = new Object[slotCount];
        String why = null;
        Step[] steps = new Step[0];
        int[] slotOf = new int[0];
        String[] names = new String[0];
        try {
            if (writer.kind != AvroSchema.Kind.RECORD) {
                throw new IllegalArgumentException("the writer schema is a " + writer + ", not a record");
            }
            if (!namesMatch(writer, reader)) {
                throw new IllegalArgumentException("the writer's record '" + writer.fullName
                        + "' is not the reader's '" + reader.fullName + "'");
            }
            Map<String, Integer> slotByName = new HashMap<>();
            for (int i = 0; i < wanted.length; i++) {
                slotByName.put(wanted[i], i);
            }
            Resolver.Fields fields = new Resolver().fields(writer, reader, "");
            steps = fields.steps;
            names = fields.names;
            slotOf = new int[steps.length];
            for (int i = 0; i < steps.length; i++) {
                AvroSchema.Field target = fields.targets[i];
                slotOf[i] = target == null ? -1 : slotByName.getOrDefault(target.name, -1);
            }
            for (AvroSchema.Field rf : fields.defaulted) {
                Integer slot = slotByName.get(rf.name);
                if (slot != null) {
                    defaults[slot] = fromDefault(rf.type, rf.defaultValue, kinds[slot]);
                }
            }
        } catch (IllegalArgumentException e) {
            why = e.getMessage();
        }
        problem = why;
        writerFields = steps;
        slots = slotOf;
        writerNames = names;
    }

    private static AvroSchema.Field readerField(Map<String, AvroSchema.Field> byName, AvroSchema reader,
                                                AvroSchema.Field wf) {
        AvroSchema.Field direct = byName.get(wf.name);
        if (direct != null) {
            return direct;
        }
        for (AvroSchema.Field rf : reader.fields) {
            if (rf.aliases.contains(wf.name)) {
                return rf;
            }
        }
        return null;
    }

    private static boolean namesMatch(AvroSchema writer, AvroSchema reader) {
        return writer.shortName().equals(reader.shortName()) || writer.fullName.equals(reader.fullName)
                || reader.aliases.contains(writer.fullName);
    }

    /**
     * Decode {@code data[from, end)} into {@code out[0, slots)}, typed for the output; a
     * DecodeError's path names the field.
     */
    void decode(byte[] data, int base, int from, int end, Object[] out) throws DecodeError {
        if (problem != null) {
            throw new DecodeError(problem);
        }
        Cursor c = new Cursor(data, from, end, base);
        System.arraycopy(defaults, 0, out, 0, slotCount);
        for (int i = 0; i < writerFields.length; i++) {
            int slot = slots[i];
            try {
                Object value = writerFields[i].read(c, slot >= 0);
                if (slot >= 0) {
                    out[slot] = value;
                }
            } catch (DecodeError bad) {
                throw bad.at(writerNames[i]);
            }
        }
        if (c.pos != end) {
            throw new DecodeError((end - c.pos) + " byte(s) after the end of the record (it is longer than its schema says)");
        }
    }

    // -- resolution -------------------------------------------------------------------------------

    private static final class Resolver {
        // recursive named types: one step per (writer, reader) pair, filled in once built
        private final Map<String, Step[]> records = new HashMap<>();

        Step resolve(AvroSchema w, AvroSchema r) {
            if (w.kind == AvroSchema.Kind.UNION) {
                Step[] branches = new Step[w.branches.size()];
                for (int i = 0; i < branches.length; i++) {
                    AvroSchema branch = w.branches.get(i);
                    AvroSchema target = r.kind == AvroSchema.Kind.UNION ? pick(branch, r) : r;
                    branches[i] = target == null || !matches(branch, target)
                            ? new Fail("a value of the writer's type " + branch + " that the reader's schema ("
                                    + r + ") cannot hold")
                            : resolve(branch, target);
                }
                return new Union(branches);
            }
            if (r.kind == AvroSchema.Kind.UNION) {
                AvroSchema target = pick(w, r);
                if (target == null) {
                    throw new IllegalArgumentException("the writer's " + w + " matches no branch of the reader's union");
                }
                return resolve(w, target);
            }
            if (!matches(w, r)) {
                throw new IllegalArgumentException("the writer's " + w + " cannot be read as the reader's " + r);
            }
            switch (w.kind) {
                case NULL:
                    return NULL;
                case BOOLEAN:
                    return BOOLEAN;
                case INT:
                case LONG:
                    if (r.kind == AvroSchema.Kind.FLOAT || r.kind == AvroSchema.Kind.DOUBLE) {
                        return w.kind == AvroSchema.Kind.INT ? INT_AS_DOUBLE : LONG_AS_DOUBLE;
                    }
                    return integral(w.kind == AvroSchema.Kind.INT, r.logical);
                case FLOAT:
                    return FLOAT;
                case DOUBLE:
                    return DOUBLE;
                case BYTES:
                    if (r.kind == AvroSchema.Kind.STRING) {
                        return STRING;
                    }
                    return "decimal".equals(r.logical) ? new Decimal(-1, r.scale, r.precision) : BYTES;
                case STRING:
                    return r.kind == AvroSchema.Kind.BYTES ? BYTES : STRING;
                case FIXED:
                    return "decimal".equals(r.logical) ? new Decimal(w.size, r.scale, r.precision) : new Fixed(w.size);
                case ENUM:
                    return enumStep(w, r);
                case ARRAY:
                    return new Blocks(resolve(w.items, r.items), false);
                case MAP:
                    return new Blocks(resolve(w.items, r.items), true);
                case RECORD:
                    return record(w, r);
                default:
                    throw new IllegalArgumentException("unsupported Avro type " + w);
            }
        }

        /** A record's writer fields: their steps, names and reader fields (null: skipped). */
        static final class Fields {
            final Step[] steps;
            final String[] names;
            final AvroSchema.Field[] targets;
            final List<AvroSchema.Field> defaulted = new ArrayList<>(); // reader fields the writer lacks

            Fields(int n) {
                steps = new Step[n];
                names = new String[n];
                targets = new AvroSchema.Field[n];
            }
        }

        /** Resolve {@code w}'s fields against {@code r}'s; {@code prefix} names the record in errors. */
        Fields fields(AvroSchema w, AvroSchema r, String prefix) {
            Map<String, AvroSchema.Field> byName = r.fieldsByName();
            Fields out = new Fields(w.fields.size());
            List<AvroSchema.Field> matched = new ArrayList<>();
            for (int i = 0; i < out.steps.length; i++) {
                AvroSchema.Field wf = w.fields.get(i);
                AvroSchema.Field rf = readerField(byName, r, wf);
                out.names[i] = wf.name;
                out.targets[i] = rf;
                out.steps[i] = resolve(wf.type, rf == null ? wf.type : rf.type);
                if (rf != null) {
                    matched.add(rf);
                }
            }
            for (AvroSchema.Field rf : r.fields) {
                if (!matched.contains(rf)) {
                    if (rf.defaultValue == null) {
                        throw new IllegalArgumentException("the reader's field '" + prefix + rf.name
                                + "' has no default and the writer's schema does not have it");
                    }
                    out.defaulted.add(rf);
                }
            }
            return out;
        }

        private Step record(AvroSchema w, AvroSchema r) {
            String key = w.fullName + "->" + r.fullName;
            Step[] holder = records.get(key);
            if (holder != null) {
                return new Deferred(holder);
            }
            holder = new Step[1];
            records.put(key, holder);
            Fields fields = fields(w, r, r.shortName() + ".");
            holder[0] = new Record(fields.steps, fields.names);
            return holder[0];
        }

        private Step enumStep(AvroSchema w, AvroSchema r) {
            StringData[] symbols = new StringData[w.symbols.size()];
            String[] missing = new String[w.symbols.size()];
            for (int i = 0; i < symbols.length; i++) {
                String symbol = w.symbols.get(i);
                String taken = r.symbols.contains(symbol) ? symbol : r.enumDefault;
                if (taken == null) {
                    missing[i] = "enum symbol '" + symbol + "' is not one of the reader's " + r.symbols;
                } else {
                    symbols[i] = StringData.fromString(taken);
                }
            }
            return new Enum(symbols, missing);
        }

        /** The first branch of union {@code r} that {@code w} matches exactly, else one it promotes to. */
        private static AvroSchema pick(AvroSchema w, AvroSchema r) {
            for (AvroSchema branch : r.branches) {
                if (branch.kind == w.kind && (w.fullName == null || namesMatch(w, branch))) {
                    return branch;
                }
            }
            for (AvroSchema branch : r.branches) {
                if (matches(w, branch)) {
                    return branch;
                }
            }
            return null;
        }

        private static boolean matches(AvroSchema w, AvroSchema r) {
            switch (w.kind) {
                case INT:
                    return r.kind == AvroSchema.Kind.INT || r.kind == AvroSchema.Kind.LONG
                            || r.kind == AvroSchema.Kind.FLOAT || r.kind == AvroSchema.Kind.DOUBLE;
                case LONG:
                    return r.kind == AvroSchema.Kind.LONG || r.kind == AvroSchema.Kind.FLOAT
                            || r.kind == AvroSchema.Kind.DOUBLE;
                case FLOAT:
                    return r.kind == AvroSchema.Kind.FLOAT || r.kind == AvroSchema.Kind.DOUBLE;
                case STRING:
                case BYTES:
                    return r.kind == AvroSchema.Kind.STRING || r.kind == AvroSchema.Kind.BYTES;
                case RECORD:
                case ENUM:
                    return r.kind == w.kind && namesMatch(w, r);
                case FIXED:
                    return r.kind == w.kind && namesMatch(w, r) && r.size == w.size;
                default:
                    return r.kind == w.kind;
            }
        }
    }

    // -- the steps --------------------------------------------------------------------------------

    private static final Step NULL = new Step() {
        @Override
        Object read(Cursor c, boolean keep) {
            return null;
        }
    };

    private static final Step BOOLEAN = new Step() {
        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            c.need(1);
            int b = c.data[c.pos++];
            if (b != 0 && b != 1) {
                throw new DecodeError("boolean byte 0x" + Integer.toHexString(b & 0xFF) + " at offset " + c.at(c.pos - 1)
                        + " (only 0x00 and 0x01 are booleans)");
            }
            return b == 1;
        }
    };

    private static Step integral(boolean isInt, String readerLogical) {
        boolean micros = "timestamp-micros".equals(readerLogical) || "local-timestamp-micros".equals(readerLogical);
        return new Step() {
            @Override
            Object read(Cursor c, boolean keep) throws DecodeError {
                long v = isInt ? c.readInt() : c.readLong();
                return keep ? (Long) (micros ? Math.floorDiv(v, 1000L) : v) : null;
            }
        };
    }

    private static final Step INT_AS_DOUBLE = new Step() {
        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            return (double) c.readInt();
        }
    };

    private static final Step LONG_AS_DOUBLE = new Step() {
        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            return (double) c.readLong();
        }
    };

    private static final Step FLOAT = new Step() {
        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            c.need(4);
            int bits = (c.data[c.pos] & 0xFF) | (c.data[c.pos + 1] & 0xFF) << 8 | (c.data[c.pos + 2] & 0xFF) << 16
                    | (c.data[c.pos + 3] & 0xFF) << 24;
            c.pos += 4;
            return (double) Float.intBitsToFloat(bits);
        }
    };

    private static final Step DOUBLE = new Step() {
        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            c.need(8);
            long bits = 0;
            for (int i = 7; i >= 0; i--) {
                bits = bits << 8 | (c.data[c.pos + i] & 0xFF);
            }
            c.pos += 8;
            return Double.longBitsToDouble(bits);
        }
    };

    private static final Step BYTES = new Step() {
        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            int n = c.readLength("bytes");
            int start = c.pos;
            c.pos += n;
            return keep ? StringData.fromString(base64(c.data, start, n)) : null;
        }
    };

    private static final Step STRING = new Step() {
        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            int n = c.readLength("string");
            int start = c.pos;
            c.pos += n;
            c.utf8(start, n);
            return keep ? StringData.fromBytes(java.util.Arrays.copyOfRange(c.data, start, start + n)) : null;
        }
    };

    private static String base64(byte[] data, int start, int n) {
        return java.util.Base64.getEncoder().encodeToString(java.util.Arrays.copyOfRange(data, start, start + n));
    }

    private static final class Fixed extends Step {
        private final int size;

        Fixed(int size) {
            this.size = size;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            c.need(size);
            int start = c.pos;
            c.pos += size;
            return keep ? StringData.fromString(base64(c.data, start, size)) : null;
        }
    }

    /** A decimal (bytes or fixed of {@code size}): two's-complement unscaled value; read as a double. */
    private static final class Decimal extends Step {
        private final int size; // -1: bytes
        private final int scale;
        private final int precision; // the most digits a value may have (0: not given)

        Decimal(int size, int scale, int precision) {
            this.size = size;
            this.scale = scale;
            this.precision = precision;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            int n = size < 0 ? c.readLength("decimal") : size;
            c.need(n);
            int start = c.pos;
            c.pos += n;
            if (n == 0) {
                return keep ? 0.0 : null;
            }
            BigInteger unscaled = new BigInteger(java.util.Arrays.copyOfRange(c.data, start, start + n));
            // checked whether or not the job reads the field: validity must not depend on what is read
            if (precision > 0 && unscaled.abs().toString().length() > precision) {
                throw new DecodeError("decimal " + new BigDecimal(unscaled, scale).toPlainString() + " has more than "
                        + precision + " digits (its precision)");
            }
            return keep ? new BigDecimal(unscaled, scale).doubleValue() : null;
        }
    }

    private static final class Enum extends Step {
        private final StringData[] symbols;
        private final String[] missing;

        Enum(StringData[] symbols, String[] missing) {
            this.symbols = symbols;
            this.missing = missing;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            int start = c.pos;
            int i = c.readInt();
            if (i < 0 || i >= symbols.length) {
                throw new DecodeError("enum index " + i + " at offset " + c.at(start) + " is out of range (" + symbols.length
                        + " symbols)");
            }
            if (missing[i] != null) {
                throw new DecodeError(missing[i]);
            }
            return symbols[i];
        }
    }

    private static final class Union extends Step {
        private final Step[] branches;

        Union(Step[] branches) {
            this.branches = branches;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            int start = c.pos;
            long i = c.readLong();
            if (i < 0 || i >= branches.length) {
                throw new DecodeError("union branch " + i + " at offset " + c.at(start) + " is out of range (" + branches.length
                        + " branches)");
            }
            return branches[(int) i].read(c, keep);
        }
    }

    /** Arrays and maps: blocks of items, each block's count first (negative: its byte size follows). */
    private static final class Blocks extends Step {
        private static final long MAX_EMPTY_ITEMS = 1_000_000;
        private final Step item;
        private final boolean map;

        Blocks(Step item, boolean map) {
            this.item = item;
            this.map = map;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            long index = 0;
            while (true) {
                int start = c.pos;
                long count = c.readLong();
                if (count == 0) {
                    return null;
                }
                if (count < 0) {
                    count = -count;
                    c.readLong(); // the block's size in bytes
                }
                // every item but a null takes a byte at least: a count beyond the bytes left is a lie
                // (and a loop of 2^62 nulls would hold the task)
                if (count > c.end - c.pos && (map || !itemCanBeEmpty() || count > MAX_EMPTY_ITEMS)) {
                    throw new DecodeError("the record ends early: a block of " + count + " items at offset " + c.at(start));
                }
                for (long k = 0; k < count; k++, index++) {
                    int keyStart = -1;
                    int keyLength = 0;
                    try {
                        if (map) {
                            keyLength = c.readLength("map key");
                            c.utf8(c.pos, keyLength);
                            keyStart = c.pos;
                            c.pos += keyLength;
                        }
                        item.read(c, false);
                    } catch (DecodeError bad) {
                        // the key is made a String only for the error's path
                        throw bad.at(keyStart < 0 ? String.valueOf(index)
                                : new String(c.data, keyStart, keyLength, StandardCharsets.UTF_8));
                    }
                }
            }
        }

        private boolean itemCanBeEmpty() {
            return item == NULL; // an array of nulls takes no bytes per item
        }
    }

    private static final class Record extends Step {
        private final Step[] fields;
        private final String[] names;

        Record(Step[] fields, String[] names) {
            this.fields = fields;
            this.names = names;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            for (int i = 0; i < fields.length; i++) {
                try {
                    fields[i].read(c, false);
                } catch (DecodeError bad) {
                    throw bad.at(names[i]);
                }
            }
            return null;
        }
    }

    /** A record that refers to itself: the step is filled in once the record is built. */
    private static final class Deferred extends Step {
        private final Step[] holder;

        Deferred(Step[] holder) {
            this.holder = holder;
        }

        @Override
        Object read(Cursor c, boolean keep) throws DecodeError {
            return holder[0].read(c, keep);
        }
    }

    // -- defaults ---------------------------------------------------------------------------------

    /** A reader default (JSON, for the union's first branch) as the output slot holds it. */
    private static Object fromDefault(AvroSchema type, JsonNode value, char kind) {
        AvroSchema t = type.kind == AvroSchema.Kind.UNION ? type.branches.get(0) : type;
        if (value == null || value.isNull() || t.kind == AvroSchema.Kind.NULL) {
            return null;
        }
        switch (kind) {
            case 's':
                return StringData.fromString(value.asText());
            case 'i':
                long v = value.asLong();
                return "timestamp-micros".equals(t.logical) ? Math.floorDiv(v, 1000L) : v;
            case 'n':
                return value.asDouble();
            default:
                return value.asBoolean();
        }
    }
}
