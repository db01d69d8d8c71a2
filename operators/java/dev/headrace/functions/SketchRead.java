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

    /** {@code hr_sketch_pick(sketch)}: a first or last value as text (cast to its type in SQL). */
    public static final class Pick extends ScalarFunction {
        private static final long serialVersionUID = 1L;

        public @DataTypeHint("STRING") String eval(@DataTypeHint("BYTES") byte[] sketch) {
            return Picks.text(sketch);
        }
    }

    /** {@code hr_sketch_top(sketch, k, bare)}: the k most frequent values with counts, as JSON. */
    public static final class Top extends ScalarFunction {
        private static final long serialVersionUID = 1L;

        public @DataTypeHint("STRING") String eval(@DataTypeHint("BYTES") byte[] sketch, Integer k, Boolean bare) {
            return TopK.top(sketch, k, Boolean.TRUE.equals(bare));
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
