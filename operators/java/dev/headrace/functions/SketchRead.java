package dev.headrace.functions;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * What a measure reads from a sketch: {@code hr_sketch_count(kind, sketch)}, the distinct count
 * (BIGINT); {@code hr_sketch_quantile(sketch, q)}, a quantile (DOUBLE).
 */
public final class SketchRead {
    private SketchRead() {}

    /** {@code hr_sketch_count(kind, sketch)}. */
    public static final class Count extends ScalarFunction {
        private static final long serialVersionUID = 1L;

        public @DataTypeHint("BIGINT") Long eval(String kind, @DataTypeHint("BYTES") byte[] sketch) {
            return Sketches.count(kind, sketch);
        }
    }

    /** {@code hr_sketch_quantile(sketch, q)}. */
    public static final class Quantile extends ScalarFunction {
        private static final long serialVersionUID = 1L;

        public @DataTypeHint("DOUBLE") Double eval(@DataTypeHint("BYTES") byte[] sketch, Double q) {
            return q == null ? null : Sketches.quantile(sketch, q);
        }
    }
}
