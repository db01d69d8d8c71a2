package dev.headrace.functions;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code hr_barrier(x)}: {@code x}, declared non-deterministic so that Flink's planner neither
 * pushes a filter on it below the operator that computes it nor computes that operator once per
 * output. A step that calls Python (enrich) passes the late judgement's column through it: the
 * outputs reading the step (on time, late, dead letters) then share one Python operator.
 */
public final class Barrier extends ScalarFunction {
    private static final long serialVersionUID = 1L;

    public Long eval(Long value) {
        return value;
    }

    @Override
    public boolean isDeterministic() {
        return false;
    }
}
