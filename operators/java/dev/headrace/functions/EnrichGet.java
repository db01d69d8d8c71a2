package dev.headrace.functions;

import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.table.types.inference.TypeInference;

/**
 * {@code hr_enrich_<step>(key)} of a step whose keys the Kafka consumer reads ahead
 * ({@link EnrichPrefetch}): the same lookup as {@link EnrichLookup}, answered on the task thread.
 * A plain scalar function, so it runs inside the calc that reads and projects the record, with no
 * copy of the record and no mail per record, where Flink's asynchronous calc has both. A key L1
 * does not have yet (its prefetch still under way, or not read ahead) waits for its batch.
 */
public final class EnrichGet extends ScalarFunction {
    private static final long serialVersionUID = 1L;

    private final String spec;
    private transient EnrichLevels levels;
    private transient EnrichLevels.Counters counters;

    public EnrichGet(String spec) {
        this.spec = spec;
    }

    @Override
    public void open(FunctionContext context) {
        levels = EnrichLevels.acquire(spec);
        counters = EnrichLevels.Counters.of(context);
    }

    public RowData eval(String key) {
        return levels.get(key, counters);
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
        return EnrichLookup.inference(spec);
    }

    @Override
    public String toString() {
        return "EnrichGet"; // never the spec: it holds passwords
    }
}
