package dev.headrace.functions;

import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.AsyncScalarFunction;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.inference.TypeInference;
import org.apache.flink.table.types.inference.TypeStrategies;

import java.util.concurrent.CompletableFuture;

/**
 * {@code hr_enrich_<step>(key)}: an enrich step's lookup in the JVM, as an asynchronous scalar
 * function returning {@code ROW<_found BOOLEAN, field…>} (as Flink's internal RowData: a cached
 * answer is handed on as it is, without a conversion per record). A key L1 has is answered on the task
 * thread; the others are answered by {@link EnrichLevels}' batcher, while the task goes on with the
 * next records (Flink keeps the records' order). Made by {@code operators/enrich.py} with the
 * step's spec, and registered as an instance (the spec holds passwords, which SQL text must not).
 *
 * <p>The record's nullable BIGINT, DOUBLE and BOOLEAN fields go through the lookup as its second
 * argument and come back in the result's last member, {@code _carried}: Flink 2.3's asynchronous
 * calc forwards the other columns of its input without their null flags (AsyncCodeGenerator adds a
 * forwarded field's value term and drops its null term), so a NULL BIGINT came out as -1.
 */
public final class EnrichLookup extends AsyncScalarFunction {
    private static final long serialVersionUID = 1L;

    private final String spec;
    private transient EnrichLevels levels;
    private transient EnrichLevels.Counters counters;

    public EnrichLookup(String spec) {
        this.spec = spec;
    }

    @Override
    public void open(FunctionContext context) {
        levels = EnrichLevels.acquire(spec);
        counters = EnrichLevels.Counters.of(context);
    }

    public void eval(CompletableFuture<RowData> future, String key) {
        levels.lookup(key, future, counters, null);
    }

    public void eval(CompletableFuture<RowData> future, String key, RowData carried) {
        levels.lookup(key, future, counters, levels.copyCarried(carried));
    }

    @Override
    public void close() {
        if (levels != null) {
            levels.release();
            levels = null;
        }
    }

    @Override
    public boolean isDeterministic() {
        return false; // a store can change between two lookups of one key
    }

    @Override
    public TypeInference getTypeInference(DataTypeFactory typeFactory) {
        return inference(spec);
    }

    /** The lookup's argument(s) and {@code ROW<_found, field…[, _carried]>} result (also EnrichGet's). */
    static TypeInference inference(String spec) {
        return inference(spec, false);
    }

    /** {@code internalKey}: the key as Flink's own string object (EnrichGet keeps it by identity). */
    static TypeInference inference(String spec, boolean internalKey) {
        EnrichSpec parsed = EnrichSpec.parse(spec);
        boolean carries = parsed.carriedNames.length > 0;
        DataTypes.Field[] fields = new DataTypes.Field[parsed.fieldNames.length + (carries ? 2 : 1)];
        fields[0] = DataTypes.FIELD("_found", DataTypes.BOOLEAN());
        for (int i = 0; i < parsed.fieldNames.length; i++) {
            fields[i + 1] = DataTypes.FIELD(parsed.fieldNames[i], type(parsed.fieldTypes[i]));
        }
        TypeInference.Builder builder = TypeInference.newBuilder();
        if (carries) {
            DataTypes.Field[] carried = new DataTypes.Field[parsed.carriedNames.length];
            for (int i = 0; i < carried.length; i++) {
                carried[i] = DataTypes.FIELD(parsed.carriedNames[i], type(parsed.carriedTypes[i]));
            }
            DataType row = DataTypes.ROW(carried).bridgedTo(RowData.class);
            fields[fields.length - 1] = DataTypes.FIELD("_carried", row);
            builder.typedArguments(DataTypes.STRING(), row);
        } else {
            builder.typedArguments(internalKey ? DataTypes.STRING().bridgedTo(StringData.class) : DataTypes.STRING());
        }
        return builder.outputTypeStrategy(TypeStrategies.explicit(DataTypes.ROW(fields).bridgedTo(RowData.class)))
                .build();
    }

    static DataType type(char code) {
        switch (code) {
            case 'i':
                return DataTypes.BIGINT();
            case 'n':
                return DataTypes.DOUBLE();
            case 'b':
                return DataTypes.BOOLEAN();
            default:
                return DataTypes.STRING();
        }
    }

    @Override
    public String toString() {
        return "EnrichLookup"; // never the spec: it holds passwords
    }
}
