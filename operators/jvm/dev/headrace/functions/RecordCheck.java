package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonProcessingException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectReader;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.JsonNodeFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.NumericNode;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.types.DataType;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Decode one record, check it against the compiled schema and extract the typed fields the
 * later steps read: the JVM twin of {@code operators/validate.py}'s RecordCheck.
 *
 * <p>The spec is JSON: {@code {"schema": {...}, "event_time": "ts", "fields": [["tenant_id",
 * "string"], ...]}}. The result row is {@code (err_path, err_msg, event_ms, field...)}: err_msg is
 * null for a good record; event_ms is the integer at the event-time field whether or not the
 * record is valid (the watermark is computed from it), null if there is none.
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
    private final String[] names;
    private final char[] kinds; // s(tring), i(nteger), n(umber), b(oolean)

    private RecordCheck(SchemaNode schema, String eventTime, String[] names, char[] kinds) {
        this.schema = schema;
        this.eventTime = eventTime;
        this.names = names;
        this.kinds = kinds;
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
        return new RecordCheck(schema, root.get("event_time").asText(), names, kinds);
    }

    DataType rowType() {
        List<DataTypes.Field> fields = new ArrayList<>();
        fields.add(DataTypes.FIELD("err_path", DataTypes.STRING()));
        fields.add(DataTypes.FIELD("err_msg", DataTypes.STRING()));
        fields.add(DataTypes.FIELD("event_ms", DataTypes.BIGINT()));
        for (int i = 0; i < names.length; i++) {
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
        double d = value.doubleValue();
        return d == Math.rint(d) && Math.abs(d) < 9.0e15 ? (long) d : null;
    }

    /** Never throws: a record the check cannot handle is a dead letter saying why. */
    RowData check(Json.Slice bytes) {
        try {
            return checkOrThrow(bytes);
        } catch (RuntimeException e) {
            GenericRowData row = new GenericRowData(3 + names.length);
            return fail(row, "/", "cannot check the record: " + e);
        }
    }

    private RowData checkOrThrow(Json.Slice bytes) {
        GenericRowData row = new GenericRowData(3 + names.length);
        if (bytes == null || bytes.length == 0) {
            return fail(row, "/", "empty record");
        }
        if (bytes.length >= 3 && bytes.data[bytes.offset] == (byte) 0xEF
                && bytes.data[bytes.offset + 1] == (byte) 0xBB && bytes.data[bytes.offset + 2] == (byte) 0xBF) {
            // Jackson would skip it; orjson (the Python engine) refuses it, and so does RFC 8259's writer side
            return fail(row, "/", "not valid JSON: UTF-8 byte order mark (BOM) is not supported");
        }
        JsonNode record;
        try {
            record = reader.readTree(bytes.data, bytes.offset, bytes.length);
        } catch (JsonProcessingException e) {
            String reason = e.getOriginalMessage();
            int newline = reason == null ? -1 : reason.indexOf('\n');
            return fail(row, "/", "not valid JSON: " + (newline < 0 ? reason : reason.substring(0, newline)));
        } catch (IOException | IllegalArgumentException e) {
            return fail(row, "/", "not valid JSON: " + e.getMessage());
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
        for (int i = 0; i < names.length; i++) {
            JsonNode value = record.get(names[i]);
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
}
