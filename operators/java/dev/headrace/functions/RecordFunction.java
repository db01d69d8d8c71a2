package dev.headrace.functions;

import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.inference.StaticArgument;
import org.apache.flink.table.types.inference.TypeInference;

import java.util.Optional;

/**
 * {@code f(payload, spec)}: the decoding step's function, for any format ({@link ValidateJson} for
 * JSON, {@link DecodeBinary} for Avro). {@code spec} must be a literal; it is compiled once per JVM
 * into a {@code C} (the subclass keeps the cache), and the result type, a ROW of the error fields,
 * the event time and the typed record fields, is derived from it at planning time, so the JSON
 * plan of a job carries everything needed to run it.
 *
 * <p>The planner calls the function several times per record with the same payload: for the
 * source's event-time column ({@code event_ms}) in the watermark generator and in the projection
 * after it, and once per field the projection reads. Only the first call per record decodes; the
 * last result is kept with its payload (a {@link Json.Memo}), per instance and JVM-wide (the
 * watermark generator has an instance of its own), and the others compare bytes (~10 ns a click).
 */
public abstract class RecordFunction<C> extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    private static Json.Memo<RowData> last = Json.Memo.empty();

    private transient String specText;
    private transient C compiled;
    private transient Json.Memo<RowData> mine; // this instance's last answer: a task thread's own

    /** The SQL name, for planning errors. */
    abstract String functionName();

    /** The compiled form of {@code spec}, from the subclass's JVM-wide cache. */
    abstract C compiled(String spec);

    /** The row type a compiled spec answers with. */
    abstract DataType rowType(C spec);

    /** The answer for one record ({@code bytes} null: a null payload); never throws. */
    abstract RowData answer(C spec, Json.Slice bytes);

    public RowData eval(StringData payload, String spec) {
        // the literal arrives as the same String object each call: looked up once per task
        if (spec != specText) {
            compiled = compiled(spec);
            specText = spec;
            mine = Json.Memo.empty();
        }
        if (payload == null) {
            return answer(compiled, null);
        }
        Json.Slice bytes = new Json.Slice().of(payload);
        if (mine.answers(compiled, bytes)) {
            return mine.value;
        }
        Json.Memo<RowData> shared = last;
        if (shared.answers(compiled, bytes)) {
            mine = shared;
            return shared.value;
        }
        mine = new Json.Memo<>(compiled, bytes, answer(compiled, bytes));
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
                        throw context.newValidationError(functionName() + ": the spec must be a literal");
                    }
                    String spec = context.getArgumentValue(1, String.class)
                            .orElseThrow(() -> context.newValidationError(functionName() + ": empty spec"));
                    return Optional.of(rowType(compiled(spec)));
                })
                .build();
    }

    @Override
    public boolean isDeterministic() {
        return true;
    }
}
