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
 * last result is kept with its payload (a {@link Json.Memo}), per instance and JVM-wide (the
 * watermark generator has an instance of its own), and the others compare bytes (~10 ns a click).
 */
public final class ValidateJson extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    private static final ConcurrentHashMap<String, RecordCheck> CHECKS = new ConcurrentHashMap<>();

    private static Json.Memo<RowData> last = Json.Memo.empty();

    private transient String specText;
    private transient RecordCheck check;
    private transient Json.Memo<RowData> mine; // this instance's last answer: a task thread's own

    public RowData eval(StringData payload, String spec) {
        // the literal arrives as the same String object each call: looked up once per task
        if (spec != specText) {
            check = CHECKS.computeIfAbsent(spec, RecordCheck::parse);
            specText = spec;
            mine = Json.Memo.empty();
        }
        if (payload == null) {
            return check.check(null);
        }
        Json.Slice bytes = new Json.Slice().of(payload);
        if (mine.answers(check, bytes)) {
            return mine.value;
        }
        Json.Memo<RowData> shared = last;
        if (shared.answers(check, bytes)) {
            mine = shared;
            return shared.value;
        }
        mine = new Json.Memo<>(check, bytes, check.check(bytes));
        last = mine;
        return mine.value;
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
