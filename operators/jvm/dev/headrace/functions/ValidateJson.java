package dev.headrace.functions;

import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.table.types.inference.StaticArgument;
import org.apache.flink.table.types.inference.TypeInference;

import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;

/**
 * {@code hr_validate(payload, spec)}: the {@code validate} step in the JVM.
 *
 * <p>{@code spec} must be a literal (see {@link RecordCheck}); the result type, a ROW of the error
 * fields, the event time and the typed record fields, is derived from it at planning time, so the
 * JSON plan of a job carries everything needed to run the check.
 *
 * <p>The planner calls the function several times per record with the same payload: for the
 * source's event-time column ({@code event_ms}) in the watermark generator and in the projection
 * after it, and once per field the projection reads. Only the first call per record parses; the
 * last result is kept with a copy of its payload, per instance and JVM-wide (the watermark
 * generator has an instance of its own), and the others compare bytes (~10 ns for a click).
 */
public final class ValidateJson extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    private static final ConcurrentHashMap<String, RecordCheck> CHECKS = new ConcurrentHashMap<>();

    /**
     * Immutable and read racily on purpose: another task thread overwriting it only causes a miss,
     * never a wrong answer, since the result depends on the check and the payload bytes alone.
     */
    private static Last last = new Last(null, null, null);

    private static final class Last {
        final RecordCheck check;
        final byte[] payload;
        final RowData result;

        Last(RecordCheck check, byte[] payload, RowData result) {
            this.check = check;
            this.payload = payload;
            this.result = result;
        }
    }

    private transient String specText;
    private transient RecordCheck check;
    private transient Last mine; // this instance's last answer: a task thread's own

    public RowData eval(StringData payload, String spec) {
        // the literal arrives as the same String object each call: looked up once per task
        if (spec != specText) {
            check = CHECKS.computeIfAbsent(spec, RecordCheck::parse);
            specText = spec;
            mine = null;
        }
        if (payload == null) {
            return check.check(null);
        }
        Json.Slice bytes = new Json.Slice().of(payload);
        Last seen = mine;
        if (seen != null && bytes.sameAs(seen.payload)) {
            return seen.result;
        }
        seen = last;
        if (seen.check == check && bytes.sameAs(seen.payload)) {
            mine = seen;
            return seen.result;
        }
        RowData result = check.check(bytes);
        // a copy: a source may reuse the buffer behind a payload once it has moved on
        mine = new Last(check, bytes.copy(), result);
        last = mine;
        return result;
    }

    @Override
    public TypeInference getTypeInference(DataTypeFactory typeFactory) {
        return TypeInference.newBuilder()
                .staticArguments(
                        StaticArgument.scalar("payload", DataTypes.STRING().bridgedTo(StringData.class), false),
                        StaticArgument.scalar("spec", DataTypes.STRING(), false))
                .outputTypeStrategy(context -> {
                    if (!context.isArgumentLiteral(1)) {
                        throw context.newValidationError("hr_validate: the schema spec must be a literal");
                    }
                    String spec = context.getArgumentValue(1, String.class)
                            .orElseThrow(() -> context.newValidationError("hr_validate: empty schema spec"));
                    return Optional.of(RecordCheck.parse(spec).rowType());
                })
                .build();
    }

    @Override
    public boolean isDeterministic() {
        return true;
    }
}
