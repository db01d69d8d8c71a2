package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

import java.io.IOException;

/**
 * {@code hr_event_time(payload, field, max_future_ms)}: the integer at top-level {@code field} of a
 * JSON object (epoch milliseconds), or null when the record is not an object, lacks the field,
 * holds something else there, or an event time out of range (see {@link EventTimes}; the Python
 * validator makes such a record a dead letter). The source's watermark is computed from it.
 *
 * <p>It streams over the record and stops at the field, with no tree and no JSONPath: this runs
 * for every record in the source task, before anything else.
 */
public final class EventTime extends ScalarFunction {
    private static final long serialVersionUID = 1L;

    /**
     * The planner evaluates the event-time column twice per record: in the source's watermark
     * generator and in the projection after it, two generated classes with one instance of this
     * function each, called back to back on the same payload (as two objects). Comparing the bytes
     * with the last payload is much cheaper than a second parse.
     */
    private static Json.Memo<Long> last = Json.Memo.empty();

    private transient JsonFactory factory;
    private transient Json.Slice bytes;

    @Override
    public void open(FunctionContext context) {
        factory = Json.factory();
        bytes = new Json.Slice();
    }

    public @DataTypeHint("BIGINT") Long eval(
            @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData payload, String field,
            Long maxFutureMs) {
        Long millis = eval(payload, field);
        if (millis != null && EventTimes.outOfRange(millis, maxFutureMs == null ? Long.MAX_VALUE : maxFutureMs,
                "", System.currentTimeMillis()) != null) {
            return null;
        }
        return millis;
    }

    public @DataTypeHint("BIGINT") Long eval(
            @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData payload, String field) {
        if (payload == null || field == null) {
            return null;
        }
        if (factory == null) {
            open(null);
        }
        Json.Slice bytes = this.bytes.of(payload);
        Json.Memo<Long> seen = last;
        if (seen.answers(field, bytes)) {
            return seen.value;
        }
        Long millis = read(bytes, field);
        last = new Json.Memo<>(field, bytes, millis);
        return millis;
    }

    private Long read(Json.Slice bytes, String field) {
        try (JsonParser parser = Json.parser(factory, bytes)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                boolean wanted = field.equals(parser.currentName());
                token = parser.nextToken();
                if (wanted) {
                    if (token == JsonToken.VALUE_NUMBER_INT) {
                        return parser.getNumberType() == JsonParser.NumberType.BIG_INTEGER ? null : parser.getLongValue();
                    }
                    if (token == JsonToken.VALUE_NUMBER_FLOAT) {
                        return Json.exactLong(parser.getDoubleValue());
                    }
                    return null;
                }
                parser.skipChildren();
            }
            return null;
        } catch (IOException e) {
            return null;
        }
    }

    @Override
    public boolean isDeterministic() {
        return true;
    }
}
