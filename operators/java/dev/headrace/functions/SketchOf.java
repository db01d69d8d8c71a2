package dev.headrace.functions;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.InputGroup;
import org.apache.flink.table.functions.ScalarFunction;

/** {@code hr_sketch_of(kind, value)}: the sketch of one value (a late record's part of its window). */
public final class SketchOf extends ScalarFunction {
    private static final long serialVersionUID = 1L;

    public @DataTypeHint("BYTES") byte[] eval(String kind, @DataTypeHint(inputGroup = InputGroup.ANY) Object value) {
        return Sketches.of(kind, value);
    }

    /** {@code hr_sketch_of('first' | 'last', value, event ms, partition, offset)}. */
    public @DataTypeHint("BYTES") byte[] eval(String kind, @DataTypeHint(inputGroup = InputGroup.ANY) Object value,
                                              Long eventMs, Integer partition, Long offset) {
        return Picks.of(value, eventMs, partition, offset);
    }
}
