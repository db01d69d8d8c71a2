package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonProcessingException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectReader;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.BigIntegerNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.BooleanNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.DoubleNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.IntNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.JsonNodeFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.LongNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.NullNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.NumericNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.TextNode;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.types.DataType;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.IntFunction;

/**
 * Decode one record, check it against the compiled schema and extract the typed fields the
 * later steps read: the JVM twin of {@code operators/validate.py}'s RecordCheck.
 *
 * <p>The spec is JSON: {@code {"schema": {...}, "event_time": "ts", "max_future_ms": 86400000,
 * "max_future": "1d", "fields": [["tenant_id", "string"], ...]}}. The result row is
 * {@code (err_path, err_msg, event_ms, field...)}: err_msg is null for a good record; event_ms is
 * the integer at the event-time field whether or not the record is valid (the watermark is
 * computed from it), null if there is none or it is out of range (see {@link EventTimes}): such a
 * record is a dead letter and cannot move the watermark.
 *
 * <p>Immutable and thread-safe: one instance per spec is shared by every task of the JVM.
 */
final class RecordCheck {
    static final ObjectMapper MAPPER = new ObjectMapper();
    private static final int MAX_MESSAGE = 2000;

    private final ObjectReader reader = new ObjectMapper(Json.factory()).reader()
            .with(DeserializationFeature.FAIL_ON_TRAILING_TOKENS).with(new FiniteNumbers());

    /** Like orjson, refuse a number too large for a double (1e400) instead of reading infinity. */
    private static final class FiniteNumbers extends JsonNodeFactory {
        private static final long serialVersionUID = 1L;

        @Override
        public NumericNode numberNode(double v) {
            if (!Double.isFinite(v)) {
                throw new IllegalArgumentException("number is infinity when parsed as double");
            }
            return super.numberNode(v);
        }

        @Override
        public NumericNode numberNode(float v) {
            return numberNode((double) v);
        }
    }
    private final SchemaNode schema;
    private final String eventTime;
    private final long maxFutureMs;
    private final String maxFutureText;
    private final String[] names;
    private final char[] kinds; // s(tring), i(nteger), n(umber), b(oolean)

    // the streaming path (see checkStream): nested values are read as trees from the open parser
    private final ObjectReader subtrees = reader.without(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    // top-level properties by name, in schema order
    private final Map<String, Integer> memberIndex = new HashMap<>();
    private final SchemaNode[] members;
    private final String[] memberPointers; // JSON Pointers of the members, made once
    private final int[] requiredIndex;
    private final int[] fieldMember;
    private final int eventTimeMember;
    private final boolean streamable;

    private RecordCheck(SchemaNode schema, String eventTime, long maxFutureMs, String maxFutureText,
                        String[] names, char[] kinds) {
        this.schema = schema;
        this.eventTime = eventTime;
        this.maxFutureMs = maxFutureMs;
        this.maxFutureText = maxFutureText;
        this.names = names;
        this.kinds = kinds;
        boolean ok = schema.streamableObject();
        Map<String, SchemaNode> properties = ok ? schema.properties() : Map.of();
        members = properties.values().toArray(new SchemaNode[0]);
        memberPointers = new String[members.length];
        for (String name : properties.keySet()) {
            memberPointers[memberIndex.size()] = SchemaNode.pointer("", name);
            memberIndex.put(name, memberIndex.size());
        }
        String[] required = ok ? schema.required() : new String[0];
        requiredIndex = new int[required.length];
        for (int i = 0; i < required.length; i++) {
            requiredIndex[i] = memberIndex.getOrDefault(required[i], -1);
            ok &= requiredIndex[i] >= 0;
        }
        fieldMember = new int[names.length];
        for (int i = 0; i < names.length; i++) {
            fieldMember[i] = memberIndex.getOrDefault(names[i], -1);
            ok &= fieldMember[i] >= 0;
        }
        eventTimeMember = memberIndex.getOrDefault(eventTime, -1);
        streamable = ok && eventTimeMember >= 0;
    }

    static RecordCheck parse(String spec) {
        JsonNode root;
        try {
            root = MAPPER.readTree(spec);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("validate spec is not JSON: " + e.getOriginalMessage());
        }
        SchemaNode schema = SchemaNode.compile(root.get("schema"), "#");
        JsonNode fields = root.get("fields");
        String[] names = new String[fields.size()];
        char[] kinds = new char[fields.size()];
        for (int i = 0; i < fields.size(); i++) {
            names[i] = fields.get(i).get(0).asText();
            String kind = fields.get(i).get(1).asText();
            switch (kind) {
                case "string": kinds[i] = 's'; break;
                case "integer": kinds[i] = 'i'; break;
                case "number": kinds[i] = 'n'; break;
                case "boolean": kinds[i] = 'b'; break;
                default: throw new IllegalArgumentException("unknown field type '" + kind + "'");
            }
        }
        JsonNode maxFuture = root.get("max_future_ms");
        RecordCheck check = new RecordCheck(schema, root.get("event_time").asText(),
                maxFuture == null ? Long.MAX_VALUE : maxFuture.asLong(),
                root.has("max_future") ? root.get("max_future").asText() : "unbounded", names, kinds);
        if ("confluent".equals(root.path("wire").asText("plain"))) {
            check.framedIds = java.util.concurrent.ConcurrentHashMap.newKeySet();
            for (JsonNode id : root.path("ids")) {
                check.framedIds.add(id.asInt());
            }
            check.subject = root.path("subject").asText("");
            check.lookup = RegistryLookup.of(root);
        }
        return check;
    }

    DataType rowType() {
        return rowType(names, kinds, names.length);
    }

    /**
     * The decoding step's row for every format: {@code (err_path, err_msg, event_ms, field...)},
     * the first {@code count} of {@code names} typed by {@code kinds} (s, i, n, b).
     */
    static DataType rowType(String[] names, char[] kinds, int count) {
        List<DataTypes.Field> fields = new ArrayList<>();
        fields.add(DataTypes.FIELD("err_path", DataTypes.STRING()));
        fields.add(DataTypes.FIELD("err_msg", DataTypes.STRING()));
        fields.add(DataTypes.FIELD("event_ms", DataTypes.BIGINT()));
        for (int i = 0; i < count; i++) {
            DataType type;
            switch (kinds[i]) {
                case 's': type = DataTypes.STRING(); break;
                case 'i': type = DataTypes.BIGINT(); break;
                case 'n': type = DataTypes.DOUBLE(); break;
                default: type = DataTypes.BOOLEAN();
            }
            fields.add(DataTypes.FIELD(names[i], type));
        }
        return DataTypes.ROW(fields).bridgedTo(RowData.class);
    }

    /** The JDK's encoder (intrinsic for Latin-1 strings) beats StringData.fromString's. */
    static StringData utf8(String text) {
        return StringData.fromBytes(text.getBytes(StandardCharsets.UTF_8));
    }

    private static GenericRowData fail(GenericRowData row, String path, String message) {
        row.setField(0, utf8(path));
        row.setField(1, utf8(message.length() > MAX_MESSAGE ? message.substring(0, MAX_MESSAGE) : message));
        return row;
    }

    static Long integral(JsonNode value) {
        if (value == null || !value.isNumber()) {
            return null;
        }
        if (value.isIntegralNumber()) {
            return value.canConvertToLong() ? value.longValue() : null;
        }
        return Json.exactLong(value.doubleValue());
    }

    // wire: confluent (the magic byte and a schema id before the JSON): the subject's ids, else null
    private Set<Integer> framedIds;
    private String subject = "";
    private RegistryLookup lookup;
    private final RegistryLookup.Writers jsonWriters = new RegistryLookup.Writers() {
        @Override
        public boolean knows(int id) {
            return framedIds.contains(id);
        }

        @Override
        public void add(int id, String schemaType, String schema) {
            if ("JSON".equals(schemaType)) {
                framedIds.add(id);
            }
        }
    };

    /** Never throws: a record the check cannot handle is a dead letter saying why. */
    RowData check(Json.Slice bytes) {
        GenericRowData row;
        if (framedIds != null && bytes != null && bytes.length > 0) {
            try {
                int id = Framing.schemaId(bytes.data, bytes.offset, bytes.length);
                if (lookup != null) {
                    long now = System.currentTimeMillis();
                    lookup.maybeRefresh(jsonWriters, now);
                    if (!framedIds.contains(id) && !lookup.lookUp(id, jsonWriters, now)) {
                        throw Framing.unknown(id, subject, framedIds, lookup.note(id));
                    }
                } else if (!framedIds.contains(id)) {
                    throw Framing.unknown(id, subject, framedIds, "");
                }
            } catch (DecodeError e) {
                return fail(new GenericRowData(3 + names.length), e.pointer(), e.getMessage());
            }
            Json.Slice json = new Json.Slice();
            json.data = bytes.data;
            json.offset = bytes.offset + Framing.HEADER;
            json.length = bytes.length - Framing.HEADER;
            bytes = json;
        }
        try {
            row = checkOrThrow(bytes);
        } catch (RuntimeException e) {
            row = new GenericRowData(3 + names.length);
            return fail(row, "/", "cannot check the record: " + e);
        }
        Long millis = (Long) row.getField(2);
        if (millis != null) {
            String why = EventTimes.outOfRange(millis, maxFutureMs, maxFutureText, System.currentTimeMillis());
            if (why != null) {
                row.setField(2, null);
                if (row.getField(1) == null) {
                    for (int i = 0; i < names.length; i++) {
                        row.setField(3 + i, null);
                    }
                    fail(row, SchemaNode.pointer("", eventTime), why);
                }
            }
        }
        return row;
    }

    private GenericRowData checkOrThrow(Json.Slice bytes) {
        GenericRowData row = new GenericRowData(3 + names.length);
        if (bytes == null || bytes.length == 0) {
            return fail(row, "/", "empty record");
        }
        if (bytes.length >= 3 && bytes.data[bytes.offset] == (byte) 0xEF
                && bytes.data[bytes.offset + 1] == (byte) 0xBB && bytes.data[bytes.offset + 2] == (byte) 0xBF) {
            // Jackson would skip it; orjson (the Python engine) refuses it, and so does RFC 8259's writer side
            return fail(row, "/", "not valid JSON: UTF-8 byte order mark (BOM) is not supported");
        }
        if (streamable) {
            try {
                GenericRowData streamed = checkStream(bytes, row);
                if (streamed != null) {
                    return streamed;
                }
            } catch (IOException | IllegalArgumentException e) {
                return fail(row, "/", notJson(e));
            }
            row = new GenericRowData(3 + names.length);
        }
        JsonNode record;
        try {
            record = reader.readTree(bytes.data, bytes.offset, bytes.length);
        } catch (IOException | IllegalArgumentException e) {
            return fail(row, "/", notJson(e));
        }
        if (record == null || record.isMissingNode()) {
            return fail(row, "/", "empty record");
        }
        row.setField(2, integral(record.get(eventTime)));
        SchemaNode.Failure failure = schema.validate(record, "");
        if (failure != null) {
            return fail(row, failure.path, failure.message);
        }
        if (!record.isObject()) {
            return fail(row, "/", SchemaNode.shown(record) + " is not a JSON object");
        }
        return extract(row, i -> record.get(names[i]));
    }

    /** The parser's reason, first line only (Jackson appends the input's location). */
    private static String notJson(Exception e) {
        String reason = e instanceof JsonProcessingException
                ? ((JsonProcessingException) e).getOriginalMessage() : e.getMessage();
        int newline = reason == null ? -1 : reason.indexOf('\n');
        return "not valid JSON: " + (newline < 0 ? reason : reason.substring(0, newline));
    }

    /** Put the typed fields of a valid record into {@code row} (or fail on a too large integer). */
    private GenericRowData extract(GenericRowData row, IntFunction<JsonNode> field) {
        for (int i = 0; i < names.length; i++) {
            JsonNode value = field.apply(i);
            if (value == null || value.isNull()) {
                continue;
            }
            switch (kinds[i]) {
                case 's':
                    row.setField(3 + i, utf8(value.isTextual() ? value.textValue() : value.toString()));
                    break;
                case 'i':
                    if (!value.canConvertToExactIntegral() || !value.canConvertToLong()) {
                        for (int j = 0; j < i; j++) {
                            row.setField(3 + j, null);
                        }
                        return fail(row, SchemaNode.pointer("", names[i]),
                                SchemaNode.shown(value) + " does not fit in a 64-bit integer");
                    }
                    row.setField(3 + i, value.longValue());
                    break;
                case 'n':
                    row.setField(3 + i, value.doubleValue());
                    break;
                default:
                    row.setField(3 + i, value.booleanValue());
            }
        }
        return row;
    }

    /**
     * The check for a flat-enough object schema, reading the record as a stream of top-level
     * members: no tree, no map per record; only nested values become (small) trees. Gives the
     * same verdict, error and fields as the tree path: required first, then each member in
     * record order. Returns null for what it does not handle (not an object, a duplicate key),
     * which then takes the tree path.
     */
    private GenericRowData checkStream(Json.Slice bytes, GenericRowData row) throws IOException {
        try (JsonParser parser = Json.parser(reader.getFactory(), bytes)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            JsonNode[] values = new JsonNode[members.length];
            SchemaNode additional = schema.additional();
            Set<String> others = null;
            SchemaNode.Failure failure = null;
            while (parser.nextToken() == JsonToken.FIELD_NAME) {
                String name = parser.currentName();
                JsonToken token = parser.nextToken();
                JsonNode value = scalar(parser, token);
                if (value == null) {
                    value = subtrees.readTree(parser);
                }
                Integer index = memberIndex.get(name);
                SchemaNode sub;
                String path;
                if (index != null) {
                    if (values[index] != null) {
                        return null;
                    }
                    values[index] = value;
                    sub = members[index];
                    path = memberPointers[index];
                } else {
                    path = null;
                    if (others == null) {
                        others = new HashSet<>();
                    }
                    if (!others.add(name)) {
                        return null;
                    }
                    sub = additional;
                    if (failure == null && schema.forbidsAdditional()) {
                        failure = new SchemaNode.Failure("/", "Additional properties are not allowed ('"
                                + name + "' was unexpected)");
                        continue;
                    }
                }
                if (failure == null && sub != null) {
                    failure = sub.validate(value, path != null ? path : SchemaNode.pointer("", name));
                }
            }
            if (parser.nextToken() != null) {
                throw new IllegalArgumentException("trailing content after the JSON value");
            }
            row.setField(2, integral(values[eventTimeMember]));
            String[] required = schema.required();
            for (int k = 0; k < required.length; k++) {
                if (values[requiredIndex[k]] == null) {
                    return fail(row, "/", "\"" + required[k] + "\" is a required property");
                }
            }
            if (failure != null) {
                return fail(row, failure.path, failure.message);
            }
            return extract(row, i -> values[fieldMember[i]]);
        }
    }

    /** The node for a scalar token, as the tree reader would make it; null for a container. */
    private static JsonNode scalar(JsonParser parser, JsonToken token) throws IOException {
        switch (token) {
            case VALUE_STRING:
                return TextNode.valueOf(parser.getText());
            case VALUE_NUMBER_INT:
                switch (parser.getNumberType()) {
                    case INT: return IntNode.valueOf(parser.getIntValue());
                    case LONG: return LongNode.valueOf(parser.getLongValue());
                    default: return BigIntegerNode.valueOf(parser.getBigIntegerValue());
                }
            case VALUE_NUMBER_FLOAT:
                double d = parser.getDoubleValue();
                if (!Double.isFinite(d)) {
                    throw new IllegalArgumentException("number is infinity when parsed as double");
                }
                return DoubleNode.valueOf(d);
            case VALUE_TRUE:
                return BooleanNode.TRUE;
            case VALUE_FALSE:
                return BooleanNode.FALSE;
            case VALUE_NULL:
                return NullNode.getInstance();
            default:
                return null;
        }
    }
}
