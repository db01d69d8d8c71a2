package dev.headrace.functions;

import org.apache.flink.metrics.Counter;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

import java.util.HashMap;
import java.util.Map;

/**
 * {@code hr_count(value, name)}: returns {@code value} unchanged and adds one to the counter
 * {@code headrace.<name>} of the operator that calls it, so that a step's records are counted
 * under a Headrace name (exported by the Prometheus reporter, read by {@code headrace jobs}).
 *
 * <p>Not deterministic, so the planner neither folds nor duplicates the call: each row passing
 * through the place it is written is counted once.
 */
public final class CountRecords extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    private transient FunctionContext context;
    private transient Map<String, Counter> counters;

    @Override
    public void open(FunctionContext context) {
        this.context = context;
        this.counters = new HashMap<>();
    }

    public Long eval(Long value, String name) {
        counters.computeIfAbsent(name, n -> context.getMetricGroup().addGroup("headrace").counter(n)).inc();
        return value;
    }

    @Override
    public boolean isDeterministic() {
        return false;
    }
}
