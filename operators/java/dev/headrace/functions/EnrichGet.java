package dev.headrace.functions;

import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.table.types.inference.TypeInference;

/**
 * {@code hr_enrich_<step>(key)} of a step whose keys the Kafka consumer reads ahead
 * ({@link EnrichPrefetch}): the same lookup as {@link EnrichLookup}, answered on the task thread.
 * A plain scalar function, so it runs inside the calc that reads and projects the record, with no
 * copy of the record and no mail per record, where Flink's asynchronous calc has both. A key L1
 * does not have yet (its prefetch still under way, or not read ahead) waits for its batch.
 *
 * <p>Declared deterministic, so that Flink's planner merges the step's two views (the one that
 * calls the lookup and the one that takes its fields) into one calc: each calc copies every
 * string column of the record, the payload included, and that copy was the largest cost the step
 * added (a JFR profile of the source task, 2026-12-07). Merged, the calc calls the function once
 * per looked-up field, each with the same key object: the calc copies its input column once per
 * record and hands that copy to every call. So the first call of a record looks the key up (and
 * is counted), and the others get the same answer by identity, never by equal content: the next
 * record's key is another object, however equal, and is looked up (and counted) again. The
 * planner does not keep answers across records for a deterministic function whose argument is a
 * column, so a store's changes still arrive as L1's ttl says.
 */
public final class EnrichGet extends ScalarFunction {
    private static final long serialVersionUID = 1L;

    private final String spec;
    private transient EnrichLevels levels;
    private transient EnrichLevels.Counters counters;
    /** the key object of the last call and its answer: the other calls for the same record */
    private transient StringData lastKey;
    private transient RowData lastRow;

    public EnrichGet(String spec) {
        this.spec = spec;
    }

    @Override
    public void open(FunctionContext context) {
        levels = EnrichLevels.acquire(spec);
        counters = EnrichLevels.Counters.of(context);
    }

    public RowData eval(StringData key) {
        if (key != lastKey || key == null) {
            lastRow = levels.get(key == null ? null : key.toString(), counters);
            lastKey = key;
        }
        return lastRow;
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
        return true; // see the class comment: the answer is per record, kept by the key's identity
    }

    @Override
    public TypeInference getTypeInference(DataTypeFactory typeFactory) {
        return EnrichLookup.inference(spec, true);
    }

    @Override
    public String toString() {
        return "EnrichGet"; // never the spec: it holds passwords
    }
}
